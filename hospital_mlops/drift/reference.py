"""The drift reference: what a window of scored encounters is compared against, and its baseline.

The reference is written at training time (``write_reference``) from the held-out test slice (the
newest period the model was validated on, which is what deployment follows) with its model
features and the model's calibrated score, and registered as evidence with the model version.
The training slice is not used: on a multi-year extract its older case mix differs from the
deployment period by itself, so clean windows would alarm. Its drift baseline (the thresholds
``calibrate_reference`` fits on a reference written in time order) is registered beside it as
``drift_baseline.json``.

Kept apart from the tests (tester.py) and the monitor (monitor.py): training
(steps/model.py) writes both files without importing either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.drift.alerts import DriftBaseline, build_baseline
from hospital_mlops.drift.data_faults import FaultRules
from hospital_mlops.drift.thresholds import Kind, ThresholdError, kinds_of
from hospital_mlops.features import FeatureSet
from hospital_mlops.model.train import RiskModel

REFERENCE_FILE = artifacts.DRIFT_REFERENCE
# the thresholds, kept with the version beside the reference
BASELINE_FILE = artifacts.DRIFT_BASELINE
REFERENCE_SEED = 20_130_101  # fixed: the same slice always gives the same reference
SCORE_COLUMN = "risk"
METADATA_KEY = b"hospital_mlops.drift_reference"


class DriftReferenceError(ValueError):
    """A drift reference that is missing, unreadable or does not fit the serving features."""


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


# --- its baseline -------------------------------------------------------------------------------


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
