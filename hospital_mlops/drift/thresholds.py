"""Drift magnitudes, and alert thresholds set from the baseline period's own week-to-week
variation at a declared false-alarm rate (the monitoring-without-noise issue; first part).

Why not p-values: at a window of 1,000 encounters a per-feature test finds every small, real
difference in site, case mix and coding between two periods, whether or not it matters; the
measured result was 18 of 20 ordinary later windows flagged (benchmarks/results/drift.json).
A threshold here answers another question: is this window further from the reference than the
baseline period's own windows were from it?

**Magnitudes** (``window_magnitudes``), each an effect size suited to its type:

* a categorical input: the Jensen–Shannon distance (base 2, so 0 … 1) between the window's and
  the reference's category shares, a missing value its own category and a category the
  reference never had counted as it is;
* a numeric input: the Wasserstein-1 distance between the non-missing values, in units of the
  reference's interquartile range (its standard deviation where the IQR is 0, as for counts that
  are mostly zero): "the window moved by this many IQRs";
* missingness per input: the absolute change in the share of missing values;
* the score: the Kolmogorov–Smirnov D between the window's and the reference's risks.

**DriftThresholds** (``calibrate``): the baseline period, in time order, is cut into consecutive
windows of the production window size (not random resamples, which hide the real week-to-week
variation); each window is measured against the rest of the baseline (leave one window out, so
a window is never compared with itself). The logarithm of a magnitude (offset by one window's
resolution, so that zero is allowed) is taken as normal around its statistic's baseline mean,
with a spread pooled over the statistics of its kind, and the threshold is the upper prediction
bound of a new window at level ``1 - rate / K``: Student's t on the pooled degrees of freedom,
widened by ``sqrt(1 + 1/B)`` for the estimated mean. The Bonferroni split over the ``K``
statistics keeps the window-level false-alarm rate at most ``rate`` where the model holds; the
evaluation harness (benchmarks/bench_drift_alarms.py) measures whether it does. A missing-share
change below ``MIN_MATERIAL`` never alerts.

Pure: numpy and scipy on the frames it is given. Nothing here is wired into serving yet.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

Kind = Literal["numeric", "categorical"]
Statistic = Literal["categorical_shift", "numeric_shift", "missingness", "score_shift"]

MISSING = "<missing>"
MIN_BASELINE_WINDOWS = 8  # fewer cannot estimate a spread worth a threshold
# The smallest change worth anyone's look, whatever the baseline's spread: an input never missing
# in the baseline would otherwise alarm on a single missing value.
MIN_MATERIAL: dict[str, float] = {"missingness": 0.02}
SCORE = "risk"


class ThresholdError(ValueError):
    """A baseline or a window that thresholds cannot be set from or applied to; the message
    names what is wrong."""


# ------------------------------------------------------------------------------ the magnitudes


def js_distance(reference: pd.Series, window: pd.Series) -> float:
    """Jensen–Shannon distance (base 2) between the category shares; missing is a category."""
    ref = _labels(reference).value_counts(normalize=True)
    win = _labels(window).value_counts(normalize=True)
    categories = ref.index.union(win.index)
    p = ref.reindex(categories, fill_value=0.0).to_numpy(dtype="float64")
    q = win.reindex(categories, fill_value=0.0).to_numpy(dtype="float64")
    m = (p + q) / 2
    divergence = 0.5 * (_kl(p, m) + _kl(q, m))
    return float(math.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    mask = p > 0
    return float(np.sum(p[mask] * np.log2(p[mask] / m[mask])))


def _labels(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def numeric_scale(reference: pd.Series) -> float:
    """The unit a numeric shift is measured in: the reference's IQR, else its standard
    deviation, else 1 (a constant input: any change is a whole unit)."""
    values = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype="float64")
    if len(values) == 0:
        return 1.0
    q1, q3 = np.percentile(values, [25, 75])
    if q3 > q1:
        return float(q3 - q1)
    spread = float(np.std(values))
    return spread if spread > 0 else 1.0


def normalized_wasserstein(reference: pd.Series, window: pd.Series, scale: float) -> float:
    """Wasserstein-1 between the non-missing values, in units of ``scale``; 0 when either side
    has no values (missingness is its own statistic)."""
    ref = pd.to_numeric(reference, errors="coerce").dropna().to_numpy(dtype="float64")
    win = pd.to_numeric(window, errors="coerce").dropna().to_numpy(dtype="float64")
    if len(ref) == 0 or len(win) == 0:
        return 0.0
    return float(stats.wasserstein_distance(ref, win) / scale)


def missing_share_change(reference: pd.Series, window: pd.Series) -> float:
    return float(abs(window.isna().mean() - reference.isna().mean()))


def ks_d(reference: np.ndarray, window: np.ndarray) -> float:
    if len(reference) == 0 or len(window) == 0:
        return 0.0
    return float(stats.ks_2samp(reference, window, method="asymp").statistic)


def window_magnitudes(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    kinds: Mapping[str, Kind],
    scales: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Every statistic of one window against the reference: ``<input>`` (its shift),
    ``<input>.missing`` and, when both frames carry it, ``risk`` (the score's KS D)."""
    missing = sorted(set(kinds) - set(reference.columns) | set(kinds) - set(window.columns))
    if missing:
        raise ThresholdError(f"inputs missing from the frames: {missing}")
    out: dict[str, float] = {}
    for name, kind in kinds.items():
        if kind == "categorical":
            out[name] = js_distance(reference[name], window[name])
        elif kind == "numeric":
            scale = (scales or {}).get(name) or numeric_scale(reference[name])
            out[name] = normalized_wasserstein(reference[name], window[name], scale)
        else:
            raise ThresholdError(f"{name}: unknown kind {kind!r} (numeric or categorical)")
        out[f"{name}.missing"] = missing_share_change(reference[name], window[name])
    if SCORE in reference.columns and SCORE in window.columns:
        out[SCORE] = ks_d(
            reference[SCORE].to_numpy(dtype="float64"), window[SCORE].to_numpy(dtype="float64")
        )
    return out


def statistic_of(name: str, kinds: Mapping[str, Kind]) -> Statistic:
    if name == SCORE:
        return "score_shift"
    if name.endswith(".missing"):
        return "missingness"
    return "categorical_shift" if kinds[name] == "categorical" else "numeric_shift"


# ------------------------------------------------------------------------------ the thresholds


@dataclass(frozen=True)
class Threshold:
    """One statistic's alert threshold and the baseline it came from."""

    name: str
    statistic: Statistic
    threshold: float
    baseline_min: float
    baseline_median: float
    baseline_max: float
    log_mean: float
    log_sd: float


@dataclass(frozen=True)
class DriftThresholds:
    """The thresholds of one reference, kept with the registered version as evidence."""

    false_alarm_rate: float  # declared, per window, over every statistic together
    window: int
    baseline_windows: int
    per_statistic_level: float  # 1 - rate / K
    offset: float  # added before the logarithm: one window's resolution
    thresholds: tuple[Threshold, ...]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "thresholds": [asdict(t) for t in self.thresholds]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftThresholds:
        try:
            return cls(
                false_alarm_rate=float(data["false_alarm_rate"]),
                window=int(data["window"]),
                baseline_windows=int(data["baseline_windows"]),
                per_statistic_level=float(data["per_statistic_level"]),
                offset=float(data["offset"]),
                thresholds=tuple(Threshold(**t) for t in data["thresholds"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ThresholdError(f"drift thresholds: not readable ({exc})") from None

    def by_name(self) -> dict[str, Threshold]:
        return {t.name: t for t in self.thresholds}


def consecutive_windows(frame: pd.DataFrame, window: int) -> list[pd.DataFrame]:
    """The frame (in time order) cut into whole consecutive windows; a short tail is dropped."""
    return [frame.iloc[i : i + window] for i in range(0, len(frame) - window + 1, window)]


def _check_rate(rate: float) -> None:
    if not (0.0 < rate < 0.5):
        raise ThresholdError(f"false_alarm_rate {rate!r}: must be in (0, 0.5), e.g. 0.02")


def calibrate(
    baseline: pd.DataFrame,
    kinds: Mapping[str, Kind],
    *,
    window: int,
    false_alarm_rate: float,
) -> DriftThresholds:
    """Thresholds from ``baseline`` (rows in time order: the validated period, with the score in
    ``risk`` if it is to be watched), at ``false_alarm_rate`` per window."""
    _check_rate(false_alarm_rate)
    if window < 50:
        raise ThresholdError(f"window {window}: too small to measure a distribution (≥ 50)")
    windows = consecutive_windows(baseline, window)
    if len(windows) < MIN_BASELINE_WINDOWS:
        raise ThresholdError(
            f"the baseline has {len(baseline)} rows: {len(windows)} whole windows of {window}, "
            f"and thresholds need at least {MIN_BASELINE_WINDOWS}"
        )
    scales = {n: numeric_scale(baseline[n]) for n, k in kinds.items() if k == "numeric"}
    measured: list[dict[str, float]] = []
    for i, current in enumerate(windows):
        rest = pd.concat([w for j, w in enumerate(windows) if j != i])
        measured.append(window_magnitudes(rest, current, kinds, scales))
    names = list(measured[0])
    count = len(windows)
    level = 1.0 - false_alarm_rate / len(names)
    offset = 1.0 / window
    logs = {n: np.log(np.array([m[n] for m in measured], dtype="float64") + offset) for n in names}
    spread = _pooled_spread(logs, {n: statistic_of(n, kinds) for n in names})
    thresholds = []
    for name in names:
        values = np.array([m[name] for m in measured], dtype="float64")
        statistic = statistic_of(name, kinds)
        sd, df = spread[statistic]
        quantile = float(stats.t.ppf(level, df=df)) * sd * math.sqrt(1.0 + 1.0 / count)
        mean = float(logs[name].mean())
        bound = float(math.exp(mean + quantile) - offset)
        thresholds.append(
            Threshold(
                name=name,
                statistic=statistic,
                threshold=max(bound, MIN_MATERIAL.get(statistic, 0.0)),
                baseline_min=float(values.min()),
                baseline_median=float(np.median(values)),
                baseline_max=float(values.max()),
                log_mean=mean,
                log_sd=sd,
            )
        )
    return DriftThresholds(false_alarm_rate, window, count, level, offset, tuple(thresholds))


def _pooled_spread(
    logs: Mapping[str, np.ndarray], statistics: Mapping[str, Statistic]
) -> dict[Statistic, tuple[float, int]]:
    """Per kind of statistic, the spread of a window's log-magnitude around its statistic's own
    baseline mean, pooled over the statistics of that kind, and its degrees of freedom
    (windows × statistics − statistics). A handful of baseline windows cannot give each
    statistic a spread of its own worth a far tail (with 9 windows, Student's t at 1 − 0.02/45
    is 6.4 standard deviations); pooled, the tail rests on a hundred residuals or more."""
    out: dict[Statistic, tuple[float, int]] = {}
    for statistic in sorted(set(statistics.values())):
        members = [n for n, s in statistics.items() if s == statistic]
        residuals = np.concatenate([logs[n] - logs[n].mean() for n in members])
        df = max(len(residuals) - len(members), 1)
        out[statistic] = (float(math.sqrt(float(np.sum(residuals**2)) / df)), df)
    return out


@dataclass(frozen=True)
class Exceedance:
    """A statistic beyond its threshold in one window, with what an owner needs to judge it."""

    name: str
    statistic: Statistic
    magnitude: float
    threshold: float
    baseline_range: tuple[float, float]


def exceedances(
    reference: pd.DataFrame,
    window: pd.DataFrame,
    kinds: Mapping[str, Kind],
    thresholds: DriftThresholds,
    scales: Mapping[str, float] | None = None,
) -> list[Exceedance]:
    """The statistics of ``window`` beyond their thresholds, largest excess first."""
    measured = window_magnitudes(reference, window, kinds, scales)
    known = thresholds.by_name()
    unknown = sorted(set(measured) - set(known))
    if unknown:
        raise ThresholdError(f"no threshold for {unknown}: recalibrate on this feature set")
    found = [
        Exceedance(
            name,
            known[name].statistic,
            value,
            known[name].threshold,
            (known[name].baseline_min, known[name].baseline_max),
        )
        for name, value in measured.items()
        if value > known[name].threshold
    ]
    return sorted(found, key=lambda e: e.magnitude / max(e.threshold, 1e-12), reverse=True)


def kinds_of(features: Sequence[tuple[str, str]]) -> dict[str, Kind]:
    """(name, feature kind) pairs → the two kinds measured here: numeric, or categorical for
    every other (binary and categorical features alike)."""
    return {name: "numeric" if kind == "numeric" else "categorical" for name, kind in features}
