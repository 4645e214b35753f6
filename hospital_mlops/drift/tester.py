"""The drift tests: one window of model features and scores judged against the drift reference.

Every feature and the score is tested against the reference (reference.py):

* ``alibi-detect`` (BSL 1.1): ``TabularDrift`` (KS for continuous features, chi-square for
  categorical ones, categories inferred from the reference) and ``KSDrift`` on the score.
* ``scipy`` (BSD, the permissive profile): the same tests called directly.

One Bonferroni correction covers every feature and the score, so a window of unchanged data
raises an alarm with probability at most ``p_value``. When the model version carries a drift
baseline, its tiered alerts (alerts.py) decide and the p-values are kept as a secondary statistic.

Kept apart from the monitor (monitor.py), which builds windows from inference-logger events:
``DriftTester.test`` takes a window as a feature frame and its scores, however it was gathered.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from hospital_mlops.drift.alerts import (
    DriftBaseline,
    assess_window,
    build_baseline,
    judged_by_magnitude,
)
from hospital_mlops.drift.reference import (
    SCORE_COLUMN,
    DriftReference,
    DriftReferenceError,
    feature_kinds,
)
from hospital_mlops.features import FeatureSet

Backend = Literal["alibi-detect", "scipy"]

MISSING_CATEGORY = "missing"
RARE_CATEGORY = "<rare or unseen>"
# Chi-square needs expected counts of about 5 or more per cell (Cochran): a category rarer than
# that in a window would make a single encounter of it "drift".
MIN_EXPECTED = 5.0
DEFAULT_WINDOW = 1000
# Every numeric feature is non-negative; a missing value becomes its own point below the range
# so missingness shifts are seen by KS instead of breaking it.
MISSING_NUMERIC = -1.0


# --- encoding and the two backends --------------------------------------------------------------


@dataclass(frozen=True)
class FeatureEncoding:
    """Feature frame → float matrix. Categorical (and binary) features become codes of the
    categories common enough in the reference to be tested (an expected ``MIN_EXPECTED`` or
    more per window). The rest, and values the reference never had, share one code: the rare
    pool. When even the pool is too rare to test on its own, it joins the least common tested
    category, so one unusual encounter cannot make a window drift, while many still do."""

    names: tuple[str, ...]
    categories: dict[str, tuple[str, ...]]  # categorical features only: the tested categories
    rare: dict[str, tuple[str, ...]] = field(default_factory=dict)  # pooled reference categories
    pool_code: dict[str, int] = field(default_factory=dict)  # the rare pool's code

    @classmethod
    def from_reference(
        cls, reference: pd.DataFrame, fs: FeatureSet, window: int = DEFAULT_WINDOW
    ) -> FeatureEncoding:
        missing = [f.name for f in fs.features if f.name not in reference.columns]
        if missing:
            raise DriftReferenceError(f"drift reference lacks features {missing}")
        # a category is tested when its expected count in a window is at least MIN_EXPECTED
        least = MIN_EXPECTED * len(reference) / max(window, 1)
        categories, rare, pool_code = {}, {}, {}
        for f in fs.features:
            if f.kind == "numeric":
                continue
            counts = pd.Series(_as_labels(reference[f.name])).value_counts()
            common = sorted(counts[counts >= least].index) or [str(counts.index[0])]
            pooled = sorted(set(counts.index) - set(common))
            categories[f.name], rare[f.name] = tuple(common), tuple(pooled)
            if counts[pooled].sum() >= least or len(common) == 1:
                pool_code[f.name] = len(common)  # its own code
            else:
                pool_code[f.name] = common.index(min(common, key=lambda c: (counts[c], c)))
        return cls(tuple(f.name for f in fs.features), categories, rare, pool_code)

    @property
    def categorical_indices(self) -> list[int]:
        return [i for i, name in enumerate(self.names) if name in self.categories]

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        out = np.empty((len(frame), len(self.names)), dtype="float64")
        for i, name in enumerate(self.names):
            if name in self.categories:
                out[:, i] = self._category_codes(name, frame[name])
            else:
                values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64")
                out[:, i] = np.where(np.isnan(values), MISSING_NUMERIC, values)
        return out

    def _category_codes(self, name: str, values: pd.Series) -> np.ndarray:
        """Hash the column once and label only its distinct values (a window has a handful):
        the same labels as ``_as_labels``, without a string per row."""
        known = self.categories[name]
        lookup = {label: code for code, label in enumerate(known)}
        pool = self.pool_code.get(name, len(known))
        codes, uniques = pd.factorize(values, use_na_sentinel=True)
        table = np.array(
            [lookup.get(str(u), pool) for u in uniques] + [lookup.get(MISSING_CATEGORY, pool)],
            dtype="float64",
        )
        return np.asarray(table[codes])  # the missing sentinel -1 picks the last entry

    def category_label(self, name: str, code: float) -> str:
        known = self.categories[name]
        label = known[int(code)] if int(code) < len(known) else RARE_CATEGORY
        if int(code) == self.pool_code.get(name, len(known)) and int(code) < len(known):
            return f"{label} + {RARE_CATEGORY}"
        return label


def _as_labels(values: pd.Series) -> np.ndarray:
    """Category labels as strings; 1.0 and "1.0" are one label, a missing value its own."""
    text = values.astype(object).where(values.notna(), MISSING_CATEGORY)
    return np.asarray(text.astype(str), dtype=object)


@dataclass(frozen=True)
class BackendOutcome:
    feature_p_values: np.ndarray
    feature_distances: np.ndarray
    score_p_value: float
    score_distance: float
    feature_drift: bool
    score_drift: bool


class DriftBackend(Protocol):
    name: Backend

    def run(self, x: np.ndarray, scores: np.ndarray) -> BackendOutcome: ...


class ScipyBackend:
    """Two-sample KS (continuous) and chi-square on the contingency table over the union of
    categories (categorical): the tests alibi-detect runs, on scipy alone (BSD licence).

    KS is ``scipy.stats.ks_2samp(method="asymp")`` computed with the reference sorted once:
    the statistic is taken where the empirical CDFs step (the distinct values of both samples)
    and the p-value is scipy's own ``kstwo.sf(d, round(n·m/(n+m)))``. The result is ks_2samp's
    to the last bit (tested) in a fraction of its time, which keeps a window test in budget."""

    name: Backend = "scipy"

    def __init__(
        self, x_ref: np.ndarray, categorical: list[int], score_ref: np.ndarray, threshold: float
    ) -> None:
        self.categorical = set(categorical)
        self.threshold = threshold
        self.ref_counts = {f: _counts(x_ref[:, f]) for f in categorical}
        self.ref_sorted = {
            f: SortedSample.of(x_ref[:, f]) for f in range(x_ref.shape[1]) if f not in categorical
        }
        self.score_ref = SortedSample.of(score_ref)

    def run(self, x: np.ndarray, scores: np.ndarray) -> BackendOutcome:
        from scipy.stats import chi2_contingency

        k = x.shape[1]
        p_values = np.ones(k)
        distances = np.zeros(k)
        for f in range(k):
            if f in self.categorical:
                ref, cur = self.ref_counts[f], _counts(x[:, f])
                labels = sorted(set(ref) | set(cur))
                table = np.array([[ref.get(v, 0) for v in labels], [cur.get(v, 0) for v in labels]])
                stat, p, _, _ = chi2_contingency(table)
            else:
                stat, p = ks_2samp_asymp(self.ref_sorted[f], x[:, f])
            p_values[f], distances[f] = float(p), float(stat)
        score_stat, score_p = ks_2samp_asymp(self.score_ref, scores)
        return BackendOutcome(
            p_values,
            distances,
            float(score_p),
            float(score_stat),
            bool((p_values < self.threshold).any()),
            bool(score_p < self.threshold),
        )


@dataclass(frozen=True)
class SortedSample:
    values: np.ndarray  # sorted
    distinct: np.ndarray

    @classmethod
    def of(cls, sample: np.ndarray) -> SortedSample:
        values = np.sort(np.asarray(sample, dtype="float64"))
        return cls(values, np.unique(values))


def ks_2samp_asymp(reference: SortedSample, sample: np.ndarray) -> tuple[float, float]:
    """Two-sided two-sample KS statistic and asymptotic p-value, as ``ks_2samp(method="asymp")``."""
    from scipy.stats import kstwo

    current = np.sort(np.asarray(sample, dtype="float64"))
    steps = np.union1d(reference.distinct, current)
    n1, n2 = len(reference.values), len(current)
    diffs = (
        np.searchsorted(reference.values, steps, side="right") / n1
        - np.searchsorted(current, steps, side="right") / n2
    )
    d = float(max(np.clip(-diffs.min(), 0, 1), diffs.max()))
    m, n = sorted([float(n1), float(n2)], reverse=True)
    p = float(np.clip(kstwo.sf(d, np.round(m * n / (m + n))), 0, 1))
    return d, p


def _counts(column: np.ndarray) -> dict[float, int]:
    values, counts = np.unique(column, return_counts=True)
    return {float(v): int(c) for v, c in zip(values, counts, strict=True)}


class AlibiDetectBackend:
    """alibi-detect's ``TabularDrift`` on the features and ``KSDrift`` on the score. alibi-detect
    is BSL 1.1: see docs/serving.md#licences before production use."""

    name: Backend = "alibi-detect"

    def __init__(
        self, x_ref: np.ndarray, categorical: list[int], score_ref: np.ndarray, threshold: float
    ) -> None:
        from alibi_detect.cd import KSDrift, TabularDrift

        k = x_ref.shape[1]
        # Every test TabularDrift runs is univariate, so each reference column may be sorted on
        # its own: the marginals (all it compares) are unchanged and the sort inside each KS
        # call gets cheap. Column-major, so a column is one contiguous block.
        columns = np.asfortranarray(np.sort(x_ref, axis=0))
        # TabularDrift divides its p_val by the number of features (Bonferroni); giving it
        # threshold × k makes its per-feature threshold the family-wide one used for the score.
        self.features = TabularDrift(
            columns,
            p_val=threshold * k,
            categories_per_feature={i: None for i in categorical},
            correction="bonferroni",
        )
        self.score = KSDrift(np.sort(score_ref).reshape(-1, 1), p_val=threshold)

    def run(self, x: np.ndarray, scores: np.ndarray) -> BackendOutcome:
        features = self.features.predict(x, drift_type="batch")["data"]
        score = self.score.predict(scores.reshape(-1, 1), drift_type="batch")["data"]
        return BackendOutcome(
            np.asarray(features["p_val"], dtype="float64"),
            np.asarray(features["distance"], dtype="float64"),
            float(np.asarray(score["p_val"]).reshape(-1)[0]),
            float(np.asarray(score["distance"]).reshape(-1)[0]),
            bool(features["is_drift"]),
            bool(score["is_drift"]),
        )


# --- the test of one window ---------------------------------------------------------------------


@dataclass(frozen=True)
class DriftResult:
    window_id: str
    window_size: int
    tested_at: str
    is_drift: bool
    feature_drift: bool
    score_drift: bool
    drifted_features: list[str]
    feature_p_values: dict[str, float]
    feature_distances: dict[str, float]
    score_p_value: float
    score_distance: float
    p_value: float  # the configured family-wise significance
    threshold: float  # per test, after Bonferroni over the features and the score
    backend: str
    model_version: str
    feature_set_version: str
    reference_rows: int
    first_event_time: str
    last_event_time: str
    test_ms: float
    # The tiered decision (drift/alerts.py), when the version carries a drift baseline: then
    # ``is_drift`` means "an alert in either tier", ``drifted_features`` the inputs beyond their
    # calibrated thresholds, and the p-values above are a secondary statistic only.
    decided_by: str = "p_value"  # "tiers" | "p_value" (a version without a drift baseline)
    tier: str | None = None  # the window's highest tier: "act", "investigate" or None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    investigate_tier: str = ""  # "ran", or "not run: <why>" (a short window, no thresholds)
    refused: dict[str, int] = field(default_factory=dict)  # requests refused, by field
    p_value_flags: list[str] = field(default_factory=list)  # secondary: p below the threshold

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftResult:
        # results stored before the tiered fields existed read back with their defaults
        return cls(**{f: data[f] for f in cls.__dataclass_fields__ if f in data})


def _p(value: float) -> float:
    """JSON has no NaN: an untestable feature (no variation at all) reads as no evidence."""
    return 1.0 if math.isnan(value) else float(value)


class DriftTester:
    """The reference, encoded once, and what judges a window against it: the tiered alerts of
    the version's drift baseline (drift/alerts.py) and, as a secondary statistic, the p-value
    tests of the backend. Without a baseline (a version registered before baselines existed) the
    p-values decide, as they used to."""

    def __init__(
        self,
        reference: DriftReference,
        fs: FeatureSet,
        backend: Backend,
        p_value: float,
        model_version: str,
        window: int = DEFAULT_WINDOW,
        baseline: DriftBaseline | None = None,
    ) -> None:
        if reference.feature_set_version and reference.feature_set_version != fs.version:
            raise DriftReferenceError(
                f"the drift reference was built with feature set {reference.feature_set_version}, "
                f"serving computes {fs.version}: they are not the same features"
            )
        self.fs = fs
        self.reference = reference
        self.p_value = p_value
        self.model_version = model_version
        self.encoding = FeatureEncoding.from_reference(reference.features, fs, window)
        self.threshold = p_value / (len(self.encoding.names) + 1)
        x_ref = self.encoding.encode(reference.features)
        cls = AlibiDetectBackend if backend == "alibi-detect" else ScipyBackend
        self.backend: DriftBackend = cls(
            x_ref, self.encoding.categorical_indices, reference.scores, self.threshold
        )
        self.reference_frame = reference.features.assign(**{SCORE_COLUMN: reference.scores})
        self.baseline: DriftBaseline | None = None
        self.baseline_note = "none: the p-value tests decide"
        if baseline is not None:
            self.baseline, self.baseline_note = _baseline_at(baseline, reference, fs, window)

    def test(
        self,
        features: pd.DataFrame,
        scores: np.ndarray,
        window_id: str | None = None,
        first_event_time: str = "",
        last_event_time: str = "",
        *,
        refused: dict[str, int] | None = None,
        keys: pd.Series | None = None,
        hours: float | None = None,
    ) -> DriftResult:
        started = time.perf_counter()
        outcome = self.backend.run(self.encoding.encode(features), np.asarray(scores, "float64"))
        names = self.encoding.names
        p_values = {n: _p(p) for n, p in zip(names, outcome.feature_p_values, strict=True)}
        p_flags = [n for n, p in p_values.items() if p < self.threshold]
        if outcome.score_drift:
            p_flags.append(SCORE_COLUMN)
        tiered: dict[str, Any] = {}
        if self.baseline is not None:
            window = features.assign(**{SCORE_COLUMN: np.asarray(scores, "float64")})
            alerts = assess_window(
                self.baseline, self.reference_frame, window, refused=refused, keys=keys,
                hours=hours,
            )  # fmt: skip
            moved = [a.subject for a in alerts if a.tier == "investigate" and a.subject in p_values]
            tiered = {
                "is_drift": bool(alerts),
                "feature_drift": bool(moved),
                "score_drift": any(a.subject == SCORE_COLUMN for a in alerts),
                "drifted_features": list(dict.fromkeys(moved)),
                "decided_by": "tiers",
                "tier": alerts[0].tier if alerts else None,
                "alerts": [a.as_dict() for a in alerts],
                "investigate_tier": (
                    "ran"
                    if judged_by_magnitude(self.baseline, len(features))
                    else "not run: "
                    + (self.baseline.not_calibrated or f"a window of {len(features)} rows is "
                       "under half the calibrated size")
                ),
            }  # fmt: skip
        elapsed = (time.perf_counter() - started) * 1000
        decision = {
            "is_drift": outcome.feature_drift or outcome.score_drift,
            "feature_drift": outcome.feature_drift,
            "score_drift": outcome.score_drift,
            "drifted_features": [n for n in p_flags if n != SCORE_COLUMN],
            **tiered,
        }
        return DriftResult(
            window_id=window_id or uuid.uuid4().hex,
            window_size=len(features),
            tested_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            feature_p_values=p_values,
            feature_distances={
                n: _p(d) for n, d in zip(names, outcome.feature_distances, strict=True)
            },
            score_p_value=_p(outcome.score_p_value),
            score_distance=_p(outcome.score_distance),
            p_value=self.p_value,
            threshold=self.threshold,
            backend=self.backend.name,
            model_version=self.model_version,
            feature_set_version=self.fs.version,
            reference_rows=len(self.reference.features),
            first_event_time=first_event_time,
            last_event_time=last_event_time,
            test_ms=round(elapsed, 3),
            refused=dict(refused or {}),
            p_value_flags=p_flags,
            **decision,
        )


def _baseline_at(
    baseline: DriftBaseline, reference: DriftReference, fs: FeatureSet, window: int
) -> tuple[DriftBaseline, str]:
    """The registered baseline, fitted to the detector's window: its thresholds hold for the
    window they were calibrated at, so another window size is calibrated again from the
    reference (in time order) under the same rate, tiers and rules."""
    kinds = feature_kinds(fs)
    if dict(baseline.kinds) != kinds:
        raise DriftReferenceError(
            "the drift baseline was calibrated on other features than serving computes; retrain"
        )
    if baseline.thresholds is None or baseline.thresholds.window == window:
        return baseline, "registered"
    rate = baseline.thresholds.false_alarm_rate
    if reference.info.get("order", "sample") == "sample":
        note = "not run: a sampled reference cannot be cut into consecutive windows"
        return replace(baseline, thresholds=None, not_calibrated=note), note
    again = build_baseline(
        reference.features.assign(**{SCORE_COLUMN: reference.scores}),
        kinds,
        window=window,
        false_alarm_rate=rate,
        hours=reference.info.get("span_hours"),
        tiers=baseline.tiers,
        rules=baseline.rules,
    )
    again = replace(again, encounters_per_hour=baseline.encounters_per_hour)
    return again, (
        f"calibrated again at window {window} (registered at {baseline.thresholds.window})"
    )
