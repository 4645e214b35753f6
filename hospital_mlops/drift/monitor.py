"""Drift of the scored population against the last validated period: the reference, the tests,
and the monitor that turns KServe inference-logger events into test windows.

The reference is written at training time (``write_reference``) from the held-out test slice (the
newest period the model was validated on, which is what deployment follows) with its model
features and the model's calibrated score, and registered as evidence with the model version.
The training slice is not used: on a multi-year extract its older case mix differs from the
deployment period by itself, so clean windows would alarm.
At serving time the monitor pairs each logged request with its response (same ``ce-id``),
recomputes the features from the raw request with the predictor's own code
(``scoring.validate_instances`` + ``features.diabetes130_features``) and, each time a window is
full, tests every feature and the score against the reference:

* ``alibi-detect`` (BSL 1.1): ``TabularDrift`` (KS for continuous features, chi-square for
  categorical ones, categories inferred from the reference) and ``KSDrift`` on the score.
* ``scipy`` (BSD, the permissive profile): the same tests called directly.

One Bonferroni correction covers every feature and the score, so a window of unchanged data
raises an alarm with probability at most ``p_value``. Nothing here imports KServe.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.data.catalog import SourceSpec
from hospital_mlops.drift.alerts import (
    DriftBaseline,
    assess_window,
    build_baseline,
    judged_by_magnitude,
)
from hospital_mlops.drift.data_faults import FaultRules
from hospital_mlops.drift.inference_events import InferenceEvent
from hospital_mlops.drift.thresholds import Kind, ThresholdError, kinds_of
from hospital_mlops.features import (
    DIABETES130_INPUTS,
    FeatureSet,
    diabetes130_features,
    diabetes130_out_of_cohort,
)
from hospital_mlops.model.scoring import (
    ENCOUNTER_TOKEN,
    MAX_INSTANCES,
    OBSERVATION_TIMES,
    PRIOR_ENCOUNTERS,
    InvalidRequest,
    validate_instances,
)
from hospital_mlops.model.train import RiskModel

Backend = Literal["alibi-detect", "scipy"]

REFERENCE_FILE = artifacts.DRIFT_REFERENCE
BASELINE_FILE = (
    artifacts.DRIFT_BASELINE
)  # the thresholds, kept with the version beside the reference
REFERENCE_SEED = 20_130_101  # fixed: the same slice always gives the same reference
SCORE_COLUMN = "risk"
METADATA_KEY = b"hospital_mlops.drift_reference"
MISSING_CATEGORY = "missing"
RARE_CATEGORY = "<rare or unseen>"
# Chi-square needs expected counts of about 5 or more per cell (Cochran): a category rarer than
# that in a window would make a single encounter of it "drift".
MIN_EXPECTED = 5.0
DEFAULT_WINDOW = 1000
# Every numeric feature is non-negative; a missing value becomes its own point below the range
# so missingness shifts are seen by KS instead of breaking it.
MISSING_NUMERIC = -1.0
MIN_WINDOW = 10
MAX_PENDING_EVENTS = 10_000
MAX_PENDING_SECONDS = 600.0


class DriftReferenceError(ValueError):
    """A drift reference that is missing, unreadable or does not fit the serving features."""


# --- the reference ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftReference:
    features: pd.DataFrame  # model features only: no keys, no label
    scores: np.ndarray
    info: dict[str, Any]  # feature_set_version, source, rows, seed, ...

    @property
    def feature_set_version(self) -> str:
        return str(self.info.get("feature_set_version", ""))


def reference_frame(
    rows_in: pd.DataFrame,
    model: RiskModel,
    fs: FeatureSet,
    rows: int,
    seed: int = REFERENCE_SEED,
    order_by: str | None = None,
) -> pd.DataFrame:
    """A slice's model features and calibrated score: its newest ``rows`` rows in time order
    when ``order_by`` names the time column (what alert thresholds are calibrated on: consecutive
    windows keep the real week-to-week variation), else a deterministic random sample.
    Identifiers and the label are left out: the detector never sees either."""
    names = [f.name for f in fs.features]
    if order_by is not None:
        ordered = rows_in.sort_values(order_by, kind="stable")
        sample = ordered.iloc[max(len(ordered) - rows, 0) :]
    else:
        sample = (
            rows_in.sample(n=min(rows, len(rows_in)), random_state=seed)
            if len(rows_in)
            else rows_in
        )
    frame = sample[names].reset_index(drop=True)
    frame[SCORE_COLUMN] = model.predict_risk(frame, fs)
    return frame


def write_reference(
    path: Path,
    slice_rows: pd.DataFrame,
    model: RiskModel,
    fs: FeatureSet,
    rows: int,
    seed: int = REFERENCE_SEED,
    *,
    slice_name: str = "test",
    order_by: str | None = None,
) -> dict[str, Any]:
    """Write ``drift_reference.parquet`` from ``slice_rows`` (the ``slice_name`` period of the
    split) with its provenance in the parquet metadata. With ``order_by``, the rows are the
    slice's newest in time order, and a timestamp column also gives the hours they span."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = reference_frame(slice_rows, model, fs, rows, seed, order_by)
    span_hours = None
    order_first = order_last = None
    if order_by is not None and len(frame):
        kept = slice_rows[order_by].sort_values(kind="stable").iloc[-len(frame) :]
        if pd.api.types.is_datetime64_any_dtype(kept):
            span_hours = float((kept.iloc[-1] - kept.iloc[0]).total_seconds() / 3600)
            order_first, order_last = kept.iloc[0].isoformat(), kept.iloc[-1].isoformat()
        else:
            order_first, order_last = int(kept.iloc[0]), int(kept.iloc[-1])
    info = {
        "feature_set": fs.name,
        "feature_set_version": fs.version,
        "source": fs.source,
        "slice": slice_name,
        "rows": len(frame),
        "slice_rows": len(slice_rows),
        "seed": seed,
        "order": order_by or "sample",
        "span_hours": span_hours,
        # the reference's first and last rows on the time axis: traffic outside it is known
        "order_first": order_first,
        "order_last": order_last,
        "score_column": SCORE_COLUMN,
        "categorical": [f.name for f in fs.features if f.kind != "numeric"],
    }
    table = pa.Table.from_pandas(frame, preserve_index=False)
    metadata = {**(table.schema.metadata or {}), METADATA_KEY: json.dumps(info).encode()}
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(metadata), path)
    return info


def read_reference(path: Path) -> DriftReference:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise DriftReferenceError(f"drift reference {path.name}: {type(exc).__name__}") from None
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise DriftReferenceError(
            f"drift reference {path.name} has no {METADATA_KEY.decode()} record"
        )
    info = json.loads(raw)
    frame = table.to_pandas()
    if SCORE_COLUMN not in frame.columns or frame.empty:
        raise DriftReferenceError(
            f"drift reference {path.name} has no rows with a {SCORE_COLUMN!r}"
        )
    scores = frame.pop(SCORE_COLUMN).to_numpy(dtype="float64")
    return DriftReference(frame, scores, info)


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
    # The tiered decision (drift_alerts.py), when the version carries a drift baseline: then
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
    the version's drift baseline (drift_alerts.py) and, as a secondary statistic, the p-value
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


def feature_kinds(fs: FeatureSet) -> dict[str, Kind]:
    return kinds_of([(f.name, f.kind) for f in fs.features])


def calibrate_reference(
    reference: DriftReference,
    fs: FeatureSet,
    window: int,
    *,
    false_alarm_rate: float,
    tiers: dict[str, str] | None = None,
    rules: FaultRules | None = None,
) -> DriftBaseline:
    """The drift baseline of a reference written in time order (``write_reference(order_by=)``):
    what training registers beside it as ``drift_baseline.json``."""
    if reference.info.get("order", "sample") == "sample":
        raise DriftReferenceError(
            "a sampled drift reference cannot calibrate thresholds: write it in time order"
        )
    return build_baseline(
        reference.features.assign(**{SCORE_COLUMN: reference.scores}),
        feature_kinds(fs),
        window=window,
        false_alarm_rate=false_alarm_rate,
        hours=reference.info.get("span_hours"),
        tiers=tiers,
        rules=rules,
    )


def write_baseline(path: Path, baseline: DriftBaseline) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(baseline.to_json(), indent=1, sort_keys=True) + "\n")
    tmp.replace(path)  # never a half-written baseline


def read_baseline(path: Path) -> DriftBaseline:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DriftReferenceError(f"drift baseline {path.name}: {type(exc).__name__}") from None
    try:
        return DriftBaseline.from_json(data)
    except ThresholdError as exc:
        raise DriftReferenceError(f"drift baseline {path.name}: {exc}") from None


# --- the monitor: logged events → windows ---------------------------------------------------------


@dataclass(frozen=True)
class Rejection:
    """Why an event (or a request/response pair) did not reach a window. ``field`` is a
    catalogued input or protocol field name, never a value sent by the client."""

    reason: str  # invalid_request | invalid_response | count_mismatch | other_model | unpaired
    field: str


@dataclass(frozen=True)
class ScoredWindow:
    window_id: str
    features: pd.DataFrame
    scores: np.ndarray
    first_event_time: str
    last_event_time: str
    # requests the endpoint refused while the window filled, by field (each a discharge that got
    # no score), and the rows' encounter tokens where the client sent them
    refused: dict[str, int] = field(default_factory=dict)
    keys: pd.Series | None = None

    @property
    def hours(self) -> float | None:
        """The time the window took to fill, from its first and last logged event."""
        first, last = _event_time(self.first_event_time), _event_time(self.last_event_time)
        if first is None or last is None:
            return None
        return max((last - first).total_seconds() / 3600, 0.0)


@dataclass
class Intake:
    windows: list[ScoredWindow] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


@dataclass
class _Pending:
    kind: str
    arrived: float
    time: str
    features: pd.DataFrame | None = None  # requests (None: the request was invalid)
    in_use: np.ndarray | None = None  # requests: rows inside the intended use
    keys: list[str | None] = field(default_factory=list)  # requests: encounter tokens sent
    scores: np.ndarray | None = None  # responses (None: the response was invalid)
    model_versions: frozenset[str] = frozenset()


_KNOWN_FIELDS = frozenset(
    {
        *DIABETES130_INPUTS,
        PRIOR_ENCOUNTERS,
        OBSERVATION_TIMES,
        ENCOUNTER_TOKEN,
        "instances",
        "<instance>",
    }
)


def _event_time(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _safe_field(name: str) -> str:
    """Metric labels and logs carry only names we defined: an unknown input name is the
    client's text, so it is reported as 'other'."""
    return name if name in _KNOWN_FIELDS else "other"


class DriftMonitor:
    """Pairs logged requests and responses by ``ce-id`` and fills windows of scored encounters.

    Requests are validated and turned into features on arrival, so no raw request is held. The
    pending buffer is bounded in count and age: an event whose partner never comes is evicted
    and counted. Not thread-safe: one event loop calls ``collect``."""

    def __init__(
        self,
        tester: DriftTester,
        source: SourceSpec,
        window: int,
        expected_model_version: str | None = None,
        max_instances: int = MAX_INSTANCES,
        max_pending: int = MAX_PENDING_EVENTS,
        max_pending_seconds: float = MAX_PENDING_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < MIN_WINDOW:
            raise ValueError(f"window must be at least {MIN_WINDOW} rows")
        self.tester = tester
        self.source = source
        self.window = window
        self.expected_model_version = expected_model_version
        self.max_instances = max_instances
        self.max_pending = max_pending
        self.max_pending_seconds = max_pending_seconds
        self.clock = clock
        self.pending: OrderedDict[str, _Pending] = OrderedDict()
        self.chunks: list[tuple[pd.DataFrame, np.ndarray, list[str | None]]] = []
        self.window_refused: Counter[str] = Counter()
        self.buffered_rows = 0
        self.window_first_time = ""
        self.window_last_time = ""
        self.received: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, str]] = Counter()
        self.windows_filled = 0
        # Scored rows outside the intended use (deaths, hospice): the reference has none, so
        # they stay out of the windows; the predictor flags each as a limitation.
        self.outside_intended_use = 0

    def collect(self, event: InferenceEvent) -> Intake:
        intake = Intake()
        self.received[event.kind] += 1
        self._evict(intake)
        item = (
            self._request(event, intake)
            if event.kind == "request"
            else self._response(event, intake)
        )
        partner = self.pending.get(event.id)
        if partner is not None and partner.kind != item.kind:
            del self.pending[event.id]
            request, response = (item, partner) if item.kind == "request" else (partner, item)
            self._pair(request, response, intake)
        else:
            if partner is not None:  # a repeated delivery: the newer one wins
                del self.pending[event.id]
            self.pending[event.id] = item
        self._evict(intake)
        for r in intake.rejections:
            self.rejected[(r.reason, r.field)] += 1
        return intake

    def test(self, window: ScoredWindow) -> DriftResult:
        keys = window.keys
        return self.tester.test(
            window.features,
            window.scores,
            window.window_id,
            window.first_event_time,
            window.last_event_time,
            refused=window.refused,
            keys=None if keys is None or keys.isna().all() else keys.dropna(),
            hours=window.hours,
        )

    def observe(self, event: InferenceEvent) -> list[DriftResult]:
        """Collect and test in one call (tests, batch replays); a server tests off its loop."""
        return [self.test(w) for w in self.collect(event).windows]

    @property
    def pending_events(self) -> int:
        return len(self.pending)

    def _request(self, event: InferenceEvent, intake: Intake) -> _Pending:
        item = _Pending("request", self.clock(), event.time)
        data = event.data
        if not isinstance(data, dict) or "instances" not in data:
            intake.rejections.append(Rejection("invalid_request", "instances"))
            return item
        try:
            # Judged as of when it was logged: observation times are checked against "now".
            valid = validate_instances(
                data["instances"],
                self.source,
                max_instances=self.max_instances,
                now=_event_time(event.time),
            )
        except InvalidRequest as exc:
            where = _safe_field(exc.errors[0].field)
            intake.rejections.append(Rejection("invalid_request", where))
            # the predictor refused the same request (same validation): discharges without a
            # score, which the window's requests_refused rule counts
            instances = data["instances"]
            self.window_refused[where] += len(instances) if isinstance(instances, list) else 1
            return item
        item.features = diabetes130_features(valid.encounters, valid.prior_encounters)
        item.features = item.features.reset_index(drop=True)
        item.in_use = ~diabetes130_out_of_cohort(valid.encounters)
        item.keys = list(valid.encounter_tokens)
        return item

    def _response(self, event: InferenceEvent, intake: Intake) -> _Pending:
        item = _Pending("response", self.clock(), event.time)
        data = event.data
        predictions = data.get("predictions") if isinstance(data, dict) else None
        if not isinstance(predictions, list) or not predictions:
            intake.rejections.append(Rejection("invalid_response", "predictions"))
            return item
        risks: list[float] = []
        versions: set[str] = set()
        for p in predictions:
            risk = p.get("risk") if isinstance(p, dict) else None
            if (
                isinstance(risk, bool)
                or not isinstance(risk, int | float)
                or not (0.0 <= float(risk) <= 1.0)
            ):
                intake.rejections.append(Rejection("invalid_response", "risk"))
                return item
            risks.append(float(risk))
            version = p.get("model_version")
            if isinstance(version, str):
                versions.add(version[:200])
        item.scores = np.asarray(risks, dtype="float64")
        item.model_versions = frozenset(versions)
        return item

    def _pair(self, request: _Pending, response: _Pending, intake: Intake) -> None:
        if request.features is None or response.scores is None:
            return  # already counted when the invalid half arrived
        if len(request.features) != len(response.scores):
            intake.rejections.append(Rejection("count_mismatch", "predictions"))
            return
        expected = self.expected_model_version
        if expected and response.model_versions and response.model_versions != {expected}:
            intake.rejections.append(Rejection("other_model", "model_version"))
            return
        features, scores = request.features, response.scores
        keys = request.keys or [None] * len(scores)
        if request.in_use is not None and not request.in_use.all():
            self.outside_intended_use += int((~request.in_use).sum())
            features = features.loc[request.in_use].reset_index(drop=True)
            scores = scores[request.in_use]
            keys = [k for k, use in zip(keys, request.in_use, strict=True) if use]
            if not len(scores):
                return
        times = sorted(t for t in (request.time, response.time) if t)
        if times and not self.window_first_time:
            self.window_first_time = times[0]
        if times:
            self.window_last_time = max(self.window_last_time, times[-1])
        self.chunks.append((features, scores, keys))
        self.buffered_rows += len(scores)
        while self.buffered_rows >= self.window:
            intake.windows.append(self._cut())

    def _cut(self) -> ScoredWindow:
        features = pd.concat([f for f, _, _ in self.chunks], ignore_index=True)
        scores = np.concatenate([s for _, s, _ in self.chunks])
        keys = [k for _, _, ks in self.chunks for k in ks]
        window = ScoredWindow(
            uuid.uuid4().hex,
            features.iloc[: self.window].reset_index(drop=True),
            scores[: self.window],
            self.window_first_time,
            self.window_last_time,
            dict(self.window_refused),
            pd.Series(keys[: self.window], dtype="object"),
        )
        self.window_refused = Counter()
        rest = len(scores) - self.window
        self.chunks = (
            [
                (
                    features.iloc[self.window :].reset_index(drop=True),
                    scores[self.window :],
                    keys[self.window :],
                )
            ]
            if rest
            else []
        )
        self.buffered_rows = rest
        self.window_first_time = self.window_last_time if rest else ""
        self.windows_filled += 1
        return window

    def _evict(self, intake: Intake) -> None:
        now = self.clock()
        while self.pending:
            oldest_id, oldest = next(iter(self.pending.items()))
            too_many = len(self.pending) > self.max_pending
            too_old = now - oldest.arrived > self.max_pending_seconds
            if not (too_many or too_old):
                break
            del self.pending[oldest_id]
            intake.rejections.append(Rejection("unpaired", oldest.kind))
