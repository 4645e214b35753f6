"""Calibration per subgroup once the label has matured: per window and configured subgroup,
observed against expected events (O/E, exact Poisson CI) and the expected calibration error
(ECE), each against the subgroup's band from the registered version's validated (test) period.
Pure: frames in, dataclasses out.

The label delay. A prediction's outcome (readmitted within ``outcome_horizon_days`` of discharge)
is known only that long after it was scored. A window is assessed once its end lies at least
``outcome_horizon_days`` before the run's ``now`` *and* at least ``min_outcomes`` of its
predictions have their outcome; before that it is "pending" (the horizon has not passed) or "not
run" (the outcomes have not come in), never a pass.

The groups. The break-downs (``config/monitoring.yaml`` ``breakdowns.by``) name request fields
as the EHR sends them; the test period holds the model's features. Both sides are mapped to one
label through the feature code itself (``hospital_mlops.features``), so a group means what the
model saw: race as sent ("missing" in the features and an absent field are one group); gender
through the sex feature ("Female", "Male"; "Unknown/Invalid" and absent are one group); age band
"[70-80)" through the band's midpoint to its decade; ``admission_source_id`` through the model's
admission-source category (emergency_room, referral, transfer, other). Another field is compared
as text with a test-period column of its own name; a field with no such column is "not run".

Small cells. A cell (window × subgroup × group) is suppressed, listed only as existing, when it
has fewer than ``small_cell_min`` predictions, predictions with outcomes, or (from 1) observed
events: an O/E and its exact CI give the events back. Zero events are shown.

The band and the rule (the "act" tier: a demonstrated impact). For a cell whose ``m``
predictions have outcomes, the band comes from windows of ``m`` drawn from the group's
test-period predictions (label, score). Each draw is two-stage: a bootstrap copy of the test
group, then ``m`` rows from that copy, so the band carries the test period's own sampling error
as well as the window's (with one stage, a band centred on a finite test period's O/E alarms
too often when windows are not much smaller than it). On each draw the same code as on the
window computes the exact Poisson CI of O/E and the ECE less its sampling noise.

- O/E alerts when its CI (``ci_level``) lies wholly outside the band ``[low, high]``: ``high``
  is the ``r``-th largest lower CI end over the draws and ``low`` the ``r``-th smallest upper
  end, ``r = floor(alpha/2 · (draws + 1))``.
- ECE alerts when it exceeds the band's upper end by more than its sampling noise:
  ``ECE − z·sqrt(Σ risk(1 − risk))/m > high`` (``z`` the two-sided normal quantile at
  ``ci_level``: the spread of the binned sum of (outcome − risk) if the risks were right), with
  ``high`` the ``r``-th largest of that quantity over the draws, ``r = floor(alpha · (draws + 1))``.

Why: the issue asks for the CI to lie outside the band; a band that is itself the range of the
point estimates would count the window's noise twice and miss a doubled event rate in small
subgroups. Setting the band on the CI ends of draws of the same size counts it once: a window
like the validated period crosses a band end with probability ``r / (draws + 1)`` whatever the
statistic's distribution (the rank of a new draw among exchangeable ones), which is at most the
per-test rate. ``alpha`` is ``false_alarm_rate / tests``, ``tests = 2 ×`` the groups that have
a band (O/E and ECE per group; Bonferroni), so a window raises any subgroup alert with
probability at most ``false_alarm_rate``. A cell's size is rounded *down* to a grid (steps of
2^(1/8)) to share bands between windows: a smaller window's band is wider, which only lowers the
rate. ECE uses equal-mass bins by rank (ties kept in one bin), fewer for small cells: one per
``ROWS_PER_BIN`` predictions with outcomes, at most ``calibration_bins``.

What the band does not hold: week-to-week variation of the group's true calibration beyond
sampling (the test period is resampled as if exchangeable). A group with fewer than
``min_outcomes`` test-period predictions gets no band ("no baseline"), nor does a group the
test period never had.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats

from hospital_mlops.features import ADMISSION_SOURCE, SEX, band_midpoint
from hospital_mlops.model.evaluate.columns import LABEL, SCORE
from hospital_mlops.monitoring.policy import MonitoringPolicy
from hospital_mlops.monitoring.windows import iso_utc, sorted_groups, window_starts

UNKNOWN = "(not sent or unknown)"
ROWS_PER_BIN = 50  # ECE bins: one per this many predictions with outcomes
DRAWS_PER_TAIL = 3  # a band end is at least the 3rd most extreme draw
MAX_DRAWS = 200_000
_GRID_STEPS_PER_DOUBLING = 8
_CHUNK = 1_000_000  # draws × rows held at once per band

RULE = (
    "A cell alerts when its observed/expected events' exact Poisson CI lies wholly outside the "
    "group's band, or its ECE less its sampling noise lies above the band's upper end. Bands "
    "come from windows of the same size drawn from the validated (test) period, set so that a "
    "window like that period raises any subgroup alert with probability at most the declared "
    "false-alarm rate (split over groups × 2 statistics)."
)

Status = Literal["run", "not_run"]
WindowStatus = Literal["pending", "not_run", "run"]
CellStatus = Literal["suppressed", "no_outcomes", "no_baseline", "pass", "alert"]


class SubgroupCalibrationError(ValueError):
    """A setting out of range: a configuration error, raised rather than reported."""


# --- groups: request fields and test-period columns mapped to one label ---------------------


@dataclass(frozen=True)
class GroupMap:
    """How a request field and its test-period column become the same group label."""

    column: str  # in test_predictions.parquet
    from_request: Callable[[pd.Series], pd.Series]
    from_column: Callable[[pd.Series], pd.Series]


def _as_text(values: pd.Series, missing: tuple[str, ...] = ()) -> pd.Series:
    absent = values.isna() | values.isin(missing)
    return values.where(~absent, UNKNOWN).astype(str)


def _sex(feature: pd.Series) -> pd.Series:
    return feature.map({1.0: "Male", 0.0: "Female"}).fillna(UNKNOWN).astype(str)


def _decade(years: pd.Series) -> pd.Series:
    low = np.floor(pd.to_numeric(years, errors="coerce").astype("float64") / 10) * 10
    return pd.Series(
        [UNKNOWN if math.isnan(v) else f"[{v:.0f}-{v + 10:.0f})" for v in low], index=years.index
    )


def _admission_source(codes: pd.Series) -> pd.Series:
    as_int = pd.to_numeric(codes, errors="coerce")
    return as_int.map(ADMISSION_SOURCE).fillna("other").astype(str)


GROUP_MAPS: dict[str, GroupMap] = {
    "race": GroupMap(
        "race", lambda s: _as_text(s, ("missing",)), lambda s: _as_text(s, ("missing",))
    ),
    "gender": GroupMap(
        "sex_male",
        lambda s: _sex(s.map(SEX)),
        lambda s: _sex(pd.to_numeric(s, errors="coerce")),
    ),
    "age": GroupMap("age_years", lambda s: _decade(band_midpoint(s)), _decade),
    "admission_source_id": GroupMap(
        "admission_source",
        _admission_source,
        lambda s: s.where(s.notna(), "other").astype(str),
    ),
}


def group_map(request_field: str) -> GroupMap:
    return GROUP_MAPS.get(request_field, GroupMap(request_field, _as_text, _as_text))


def _labels(values: pd.Series, mapping: Callable[[pd.Series], pd.Series]) -> np.ndarray:
    """Each row's group label, mapping each distinct value once (a log holds millions of rows
    and a handful of values)."""
    codes, uniques = pd.factorize(values.astype(object))
    mapped = mapping(pd.Series([*uniques, None], dtype=object)).to_numpy(dtype=object)
    return np.asarray(mapped[np.where(codes < 0, len(uniques), codes)], dtype=object)


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationSettings:
    groups: dict[str, str]  # break-down name → request field
    window_hours: float
    outcome_horizon_days: int
    min_outcomes: int
    small_cell_min: int
    calibration_bins: int
    ci_level: float = 0.95
    seed: int = 0
    false_alarm_rate: float = 0.02  # per matured window, over every subgroup × statistic

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 0.5:
            raise SubgroupCalibrationError(
                f"false_alarm_rate {self.false_alarm_rate!r}: must be in (0, 0.5), e.g. 0.02"
            )
        if not 0.5 < self.ci_level < 1:
            raise SubgroupCalibrationError(f"ci_level {self.ci_level!r}: must be in (0.5, 1)")
        if self.window_hours <= 0 or self.outcome_horizon_days < 0:
            raise SubgroupCalibrationError("window_hours must be > 0, outcome_horizon_days ≥ 0")
        if self.min_outcomes < 1 or self.small_cell_min < 1 or self.calibration_bins < 1:
            raise SubgroupCalibrationError(
                "min_outcomes, small_cell_min and calibration_bins must be ≥ 1"
            )

    @classmethod
    def from_policy(
        cls, policy: MonitoringPolicy, false_alarm_rate: float = 0.02
    ) -> CalibrationSettings:
        return cls(
            groups=dict(policy.breakdowns.by),
            window_hours=policy.windows.length_hours,
            outcome_horizon_days=policy.windows.outcome_horizon_days,
            min_outcomes=policy.windows.min_outcomes,
            small_cell_min=policy.breakdowns.small_cell_min,
            calibration_bins=policy.thresholds.calibration_bins,
            ci_level=policy.bootstrap.ci_level,
            seed=policy.bootstrap.seed,
            false_alarm_rate=false_alarm_rate,
        )

    def test_period_columns(self) -> list[str]:
        """What this reads of test_predictions.parquet: label, score, one column per group."""
        columns = [group_map(f).column for f in self.groups.values()]
        return list(dict.fromkeys([LABEL, SCORE, *columns]))


# --- the statistics: one implementation for the window and for the band's draws -------------


def bins_for(size: int, most: int) -> int:
    return max(1, min(most, size // ROWS_PER_BIN))


def grid_size(m: int) -> int:
    """The largest size of the form floor(2^(j/8)) not above ``m``: bands are shared by windows
    of nearly the same size, always from a size no larger than the cell's."""
    if m < 2:
        return m
    j = math.floor(_GRID_STEPS_PER_DOUBLING * math.log2(m) + 1e-9)
    return min(m, math.floor(2 ** (j / _GRID_STEPS_PER_DOUBLING)))


@dataclass(frozen=True)
class _Stats:
    observed: np.ndarray
    expected: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ece: np.ndarray
    noise: np.ndarray


def _statistics(score: np.ndarray, label: np.ndarray, bins: int, ci_level: float) -> _Stats:
    """Per row of ``score``/``label`` (replicates × rows, each row sorted by score): observed
    and expected events, the exact Poisson CI of O/E, the ECE over equal-mass bins by rank
    (tied risks in one bin) and the ECE's sampling noise."""
    b, m = score.shape
    position = np.broadcast_to(np.arange(m), (b, m))
    starts = np.ones((b, m), dtype=bool)
    starts[:, 1:] = score[:, 1:] != score[:, :-1]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    bin_of = first * bins // m
    key = np.arange(b)[:, None] * bins + bin_of
    per_bin = np.bincount(key.ravel(), weights=(label - score).ravel(), minlength=b * bins)
    ece = np.abs(per_bin.reshape(b, bins)).sum(axis=1) / m
    z = float(stats.norm.ppf(1 - (1 - ci_level) / 2))
    noise = z * np.sqrt((score * (1 - score)).sum(axis=1)) / m
    observed = label.sum(axis=1)
    expected = np.maximum(score.sum(axis=1), 1e-12)
    tail = (1 - ci_level) / 2
    low = np.zeros(b)
    some = observed > 0
    low[some] = stats.chi2.ppf(tail, 2 * observed[some]) / 2
    high = stats.chi2.ppf(1 - tail, 2 * observed + 2) / 2
    return _Stats(observed, expected, low / expected, high / expected, ece, noise)


# --- the band -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """What windows of ``size`` drawn from the validated period show, for one group."""

    size: int
    draws: int
    oe_low: float | None  # None: the declared rate is too small for the draws (never alerts)
    oe_high: float | None
    oe_median: float
    ece_high: float | None
    ece_median: float


@dataclass(frozen=True)
class _TestGroup:
    score: np.ndarray  # sorted by (score, label)
    label: np.ndarray


def _draws(
    group: _TestGroup, m: int, replicates: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows of ``m`` rows, two-stage: ``m`` slots of a bootstrap copy of the group (a slot
    drawn twice is the same row), each slot an independent uniform row. Rows come back sorted
    by (score, label), as the group is."""
    n = len(group.score)
    per_chunk = max(1, _CHUNK // m)
    for done in range(0, replicates, per_chunk):
        k = min(per_chunk, replicates - done)
        slots = np.sort(rng.integers(0, n, (k, m)), axis=1)
        rows = rng.integers(0, n, (k, m))
        again = np.zeros((k, m), dtype=bool)
        again[:, 1:] = slots[:, 1:] == slots[:, :-1]
        source = np.maximum.accumulate(np.where(again, 0, np.arange(m)), axis=1)
        rows = np.sort(np.take_along_axis(rows, source, axis=1), axis=1)
        yield group.score[rows], group.label[rows]


def draws_needed(alpha: float) -> int:
    return min(MAX_DRAWS, math.ceil(DRAWS_PER_TAIL / (alpha / 2)))


def _rth(values: np.ndarray, r: int, largest: bool) -> float | None:
    if r < 1:
        return None
    ordered = np.sort(values)
    return float(ordered[-r] if largest else ordered[r - 1])


def band_for(
    group: _TestGroup, size: int, alpha: float, settings: CalibrationSettings, seed: int
) -> Band:
    replicates = draws_needed(alpha)
    rng = np.random.default_rng([settings.seed, seed, size])
    bins = bins_for(size, settings.calibration_bins)
    parts = [
        _statistics(score, label, bins, settings.ci_level)
        for score, label in _draws(group, size, replicates, rng)
    ]
    low = np.concatenate([p.ci_low for p in parts])
    high = np.concatenate([p.ci_high for p in parts])
    ratio = np.concatenate([p.observed / p.expected for p in parts])
    ece = np.concatenate([p.ece for p in parts])
    beyond_noise = ece - np.concatenate([p.noise for p in parts])
    r_oe = math.floor(alpha / 2 * (replicates + 1))
    r_ece = math.floor(alpha * (replicates + 1))
    return Band(
        size=size,
        draws=replicates,
        oe_low=_round(_rth(high, r_oe, largest=False)),
        oe_high=_round(_rth(low, r_oe, largest=True)),
        oe_median=round(float(np.median(ratio)), 6),
        ece_high=_round(_rth(beyond_noise, r_ece, largest=True)),
        ece_median=round(float(np.median(ece)), 6),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


# --- results --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CalibrationCell:
    window_start: str
    breakdown: str
    group: str
    status: CellStatus
    n: int | None = None
    n_outcomes: int | None = None
    observed_events: int | None = None
    expected_events: float | None = None
    observed_to_expected: float | None = None
    oe_ci: list[float] | None = None
    ece: float | None = None
    ece_noise: float | None = None
    bins: int | None = None
    band: Band | None = None
    alerts: list[str] = field(default_factory=list)

    @property
    def suppressed(self) -> bool:
        return self.status == "suppressed"

    def as_dict(self) -> dict[str, Any]:
        if self.suppressed:  # that it exists, nothing more
            return {
                "window_start": self.window_start,
                "breakdown": self.breakdown,
                "group": self.group,
                "suppressed": True,
                "status": self.status,
            }
        return {**asdict(self), "suppressed": False}


@dataclass(frozen=True)
class WindowCalibration:
    start: str
    end: str
    matures_at: str  # when its last prediction's outcome horizon has passed
    status: WindowStatus
    reason: str | None
    cells: list[CalibrationCell]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "matures_at": self.matures_at,
            "status": self.status,
            "reason": self.reason,
            "cells": [c.as_dict() for c in self.cells],
        }


@dataclass(frozen=True)
class SubgroupAlert:
    window_start: str
    breakdown: str
    group: str
    statistic: str  # observed_to_expected_high | observed_to_expected_low | ece
    message: str
    kind: str = "calibration"
    tier: str = "act"  # a demonstrated impact on matured outcomes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BreakdownStatus:
    breakdown: str
    request_field: str
    column: str
    status: Status
    reason: str | None
    banded_groups: list[str]
    groups_without_band: list[str]  # too few test-period predictions for a band

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SubgroupCalibration:
    status: Status
    reason: str | None
    false_alarm_rate: float
    tests_per_window: int
    per_test_rate: float | None
    ci_level: float
    breakdowns: list[BreakdownStatus]
    windows: list[WindowCalibration]
    alerts: list[SubgroupAlert]
    rule: str = RULE

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "false_alarm_rate": self.false_alarm_rate,
            "tests_per_window": self.tests_per_window,
            "per_test_rate": self.per_test_rate,
            "ci_level": self.ci_level,
            "rule": self.rule,
            "breakdowns": [b.as_dict() for b in self.breakdowns],
            "windows": [w.as_dict() for w in self.windows],
            "alerts": [a.as_dict() for a in self.alerts],
        }


def _not_run(settings: CalibrationSettings, reason: str) -> SubgroupCalibration:
    return SubgroupCalibration(
        "not_run", reason, settings.false_alarm_rate, 0, None, settings.ci_level, [], [], []
    )


# --- the run --------------------------------------------------------------------------------


def _test_groups(
    test_period: pd.DataFrame, settings: CalibrationSettings
) -> tuple[list[BreakdownStatus], dict[tuple[str, str], _TestGroup]]:
    score = pd.to_numeric(test_period[SCORE], errors="coerce").to_numpy("float64")
    label = pd.to_numeric(test_period[LABEL], errors="coerce").to_numpy("float64")
    usable = ~np.isnan(score) & ~np.isnan(label)
    statuses, groups = [], {}
    for name, request_field in settings.groups.items():
        mapping = group_map(request_field)
        if mapping.column not in test_period.columns:
            statuses.append(
                BreakdownStatus(
                    name,
                    request_field,
                    mapping.column,
                    "not_run",
                    f"the test-period predictions have no column {mapping.column!r} (for the "
                    f"request field {request_field!r})",
                    [],
                    [],
                )
            )
            continue
        labels = _labels(test_period[mapping.column], mapping.from_column)
        banded, without = [], []
        for group in sorted(set(labels[usable])):
            rows = usable & (labels == group)
            if rows.sum() < settings.min_outcomes:
                without.append(str(group))
                continue
            order = np.lexsort((label[rows], score[rows]))
            groups[(name, str(group))] = _TestGroup(score[rows][order], label[rows][order])
            banded.append(str(group))
        statuses.append(
            BreakdownStatus(name, request_field, mapping.column, "run", None, banded, without)
        )
    return statuses, groups


def _check_test_period(test_period: pd.DataFrame | None) -> str | None:
    if test_period is None:
        return "the registered version has no test-period predictions to set bands from"
    missing = [c for c in (LABEL, SCORE) if c not in test_period.columns]
    if missing:
        return f"the test-period predictions lack {', '.join(missing)}"
    label = pd.to_numeric(test_period[LABEL], errors="coerce").dropna()
    if label.empty or not label.isin([0, 1]).all():
        return "the test-period labels are not 0/1"
    score = pd.to_numeric(test_period[SCORE], errors="coerce").dropna()
    if score.empty or not ((score >= 0) & (score <= 1)).all():
        return "the test-period scores are not risks in [0, 1]"
    return None


@dataclass(frozen=True)
class _Pending:
    """A cell whose numbers are in and whose band is still to be drawn."""

    start: str
    end: str
    name: str
    group: str
    n: int
    score: np.ndarray  # its predictions with outcomes, sorted by (risk, outcome)
    label: np.ndarray
    size: int


def _first_pass(
    key: int,
    rows: np.ndarray,
    starts: pd.DatetimeIndex,
    frame: tuple[np.ndarray, np.ndarray],
    labels: dict[str, np.ndarray],
    settings: CalibrationSettings,
    now: pd.Timestamp,
    banded: dict[tuple[str, str], _TestGroup],
) -> tuple[WindowCalibration, list[CalibrationCell | _Pending]]:
    risk, outcome = frame
    start = pd.Timestamp(starts[key])
    end = start + pd.Timedelta(hours=settings.window_hours)
    matures = end + pd.Timedelta(days=settings.outcome_horizon_days)
    span = (iso_utc(start), iso_utc(end), iso_utc(matures))
    if matures > now:
        reason = (
            f"outcomes mature on {span[2][:10]} ({settings.outcome_horizon_days} days after "
            "the window ends)"
        )
        return WindowCalibration(*span, "pending", reason, []), []
    if (~np.isnan(outcome[rows])).sum() < settings.min_outcomes:
        reason = (
            f"the outcome horizon has passed but fewer than {settings.min_outcomes} of the "
            "window's predictions have outcomes"
        )
        return WindowCalibration(*span, "not_run", reason, []), []
    small = settings.small_cell_min
    cells: list[CalibrationCell | _Pending] = []
    for name, all_labels in labels.items():
        window_labels = all_labels[rows]
        for group in sorted(set(window_labels)):
            member = rows[window_labels == group]
            y = outcome[member]
            with_outcome = ~np.isnan(y)
            n, m = len(member), int(with_outcome.sum())
            events = int(y[with_outcome].sum())
            if n < small or 0 < m < small or 0 < events < small:
                cells.append(CalibrationCell(span[0], name, group, "suppressed"))
            elif m == 0:
                cells.append(
                    CalibrationCell(span[0], name, group, "no_outcomes", n=n, n_outcomes=0)
                )
            elif (name, group) not in banded:
                cells.append(
                    CalibrationCell(
                        span[0],
                        name,
                        group,
                        "no_baseline",
                        n=n,
                        n_outcomes=m,
                        observed_events=events,
                    )
                )
            else:
                r, o = risk[member][with_outcome], y[with_outcome]
                order = np.lexsort((o, r))
                cells.append(_Pending(*span[:2], name, group, n, r[order], o[order], grid_size(m)))
    return WindowCalibration(*span, "run", None, []), cells


def _assess(
    cell: _Pending, band: Band, settings: CalibrationSettings
) -> tuple[CalibrationCell, list[SubgroupAlert]]:
    bins = bins_for(cell.size, settings.calibration_bins)
    s = _statistics(cell.score[None, :], cell.label[None, :], bins, settings.ci_level)
    ratio = float(s.observed[0] / s.expected[0])
    low, high = float(s.ci_low[0]), float(s.ci_high[0])
    ece, noise = float(s.ece[0]), float(s.noise[0])
    level = f"{settings.ci_level:.0%}"
    where = f"window {cell.start[:10]}–{cell.end[:10]}: {cell.name}={cell.group}"
    ci = f"O/E {ratio:.2f} ({level} CI {low:.2f}–{high:.2f})"
    of = f"the validated period's band for windows of {band.size}"
    found: list[tuple[str, str]] = []
    if band.oe_high is not None and low > band.oe_high:
        found.append(
            (
                "observed_to_expected_high",
                f"{where}: {ci} wholly above {of} ({band.oe_low}–{band.oe_high}): "
                "more readmissions than predicted",
            )
        )
    if band.oe_low is not None and high < band.oe_low:
        found.append(
            (
                "observed_to_expected_low",
                f"{where}: {ci} wholly below {of} ({band.oe_low}–{band.oe_high}): "
                "fewer readmissions than predicted",
            )
        )
    if band.ece_high is not None and ece - noise > band.ece_high:
        found.append(
            (
                "ece",
                f"{where}: ECE {ece:.3f} exceeds {of} (upper end {band.ece_high:.3f}) by "
                f"more than its sampling noise ({noise:.3f})",
            )
        )
    done = CalibrationCell(
        window_start=cell.start,
        breakdown=cell.name,
        group=cell.group,
        status="alert" if found else "pass",
        n=cell.n,
        n_outcomes=len(cell.score),
        observed_events=int(s.observed[0]),
        expected_events=round(float(s.expected[0]), 4),
        observed_to_expected=round(ratio, 6),
        oe_ci=[round(low, 6), round(high, 6)],
        ece=round(ece, 6),
        ece_noise=round(noise, 6),
        bins=bins,
        band=band,
        alerts=[statistic for statistic, _ in found],
    )
    alerts = [SubgroupAlert(cell.start, cell.name, cell.group, st, msg) for st, msg in found]
    return done, alerts


def subgroup_calibration(
    predictions: pd.DataFrame,
    test_period: pd.DataFrame | None,
    settings: CalibrationSettings,
    now: datetime,
) -> SubgroupCalibration:
    """``predictions``: ``scored_at`` (UTC), ``risk``, ``outcome`` (1.0 / 0.0, NaN until known)
    and one column per break-down (the request field as sent). ``test_period``: the registered
    version's ``test_predictions.parquet`` (``label``, ``score``, the subgroup columns).
    ``now``: the monitoring run's time, which decides which windows have matured. Inputs that
    cannot be assessed give "not run" with the reason, never an exception; only a setting out
    of range raises (``SubgroupCalibrationError``)."""
    problem = _check_test_period(test_period)
    if problem is not None:
        return _not_run(settings, problem)
    assert test_period is not None
    needed = [c for c in ("scored_at", "risk", "outcome") if c not in predictions.columns]
    if needed:
        return _not_run(settings, f"the logged predictions lack {', '.join(needed)}")
    if predictions.empty:
        return _not_run(settings, "no logged predictions")
    statuses, banded = _test_groups(test_period, settings)
    for i, status in enumerate(statuses):
        if status.status == "run" and status.breakdown not in predictions.columns:
            statuses[i] = BreakdownStatus(
                status.breakdown,
                status.request_field,
                status.column,
                "not_run",
                f"the logged predictions lack the break-down {status.breakdown!r}",
                [],
                [],
            )
    running = [s for s in statuses if s.status == "run"]
    tests = 2 * sum(len(s.banded_groups) for s in running)
    if tests == 0:
        return SubgroupCalibration(
            "not_run",
            "no configured subgroup has a band (each needs a test-period column and at least "
            f"{settings.min_outcomes} test-period predictions in a group)",
            settings.false_alarm_rate,
            0,
            None,
            settings.ci_level,
            statuses,
            [],
            [],
        )
    alpha = settings.false_alarm_rate / tests
    banded = {k: v for k, v in banded.items() if any(k[0] == s.breakdown for s in running)}
    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp
    starts = window_starts(predictions["scored_at"], timedelta(hours=settings.window_hours))
    window, window_start = pd.factorize(starts, sort=True)
    frame = (
        predictions["risk"].to_numpy(dtype="float64"),
        predictions["outcome"].to_numpy(dtype="float64"),
    )
    labels = {
        s.breakdown: _labels(predictions[s.breakdown], group_map(s.request_field).from_request)
        for s in running
    }
    index = pd.DatetimeIndex(window_start)
    first = [
        _first_pass(key, rows, index, frame, labels, settings, stamp, banded)
        for key, rows in sorted_groups(window)
        if key >= 0  # a NaT window
    ]
    wanted = sorted(
        {(c.name, c.group, c.size) for _, cells in first for c in cells if isinstance(c, _Pending)}
    )

    def draw(want: tuple[str, str, int]) -> Band:
        name, group, size = want
        return band_for(
            banded[(name, group)], size, alpha, settings, zlib.crc32(f"{name}\0{group}".encode())
        )

    # draws are numpy sorts and gathers, outside the GIL: the bands share the cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(wanted), os.cpu_count() or 1))) as pool:
        bands = dict(zip(wanted, pool.map(draw, wanted), strict=True))
    windows, alerts = [], []
    for w, cells in first:
        done: list[CalibrationCell] = []
        for c in cells:
            if isinstance(c, _Pending):
                cell, raised = _assess(c, bands[(c.name, c.group, c.size)], settings)
                done.append(cell)
                alerts.extend(raised)
            else:
                done.append(c)
        windows.append(WindowCalibration(w.start, w.end, w.matures_at, w.status, w.reason, done))
    return SubgroupCalibration(
        "run",
        None,
        settings.false_alarm_rate,
        tests,
        alpha,
        settings.ci_level,
        statuses,
        windows,
        alerts,
    )
