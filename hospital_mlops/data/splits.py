"""Time-based train / validation / test splits with an embargo between periods.

A model is validated the way it will be used: trained on the past, tested on a later period.
Between periods an embargo at least as long as the label window is left out, so no training label
(readmission within 30 days) can depend on an event inside a later period. Patients recur across
periods as they do in deployment; how many do is reported, not hidden.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.snapshots import combine_hashes
from hospital_mlops.use_case import SplitPolicy

PERIODS = ("train", "validation", "test")
_NS_PER_DAY = 86_400 * 10**9


class SplitError(ValueError):
    """A slice cannot be used: it is empty, has one class, or lacks a declared column."""


class SplitLeakage(SplitError):
    """A period's label windows reach into a later period: its labels could see the future."""


@dataclass(frozen=True)
class TemporalSplit:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    policy: SplitPolicy
    embargoed_rows: int
    summary: list[dict[str, Any]]

    def period(self, name: str) -> pd.DataFrame:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]


def split_sha256(features_sha256: str, policy: SplitPolicy) -> str:
    """The split's lineage address: the snapshot it cut and the policy it cut it with."""
    return combine_hashes(
        {"features": features_sha256, "policy": json.dumps(policy.model_dump(mode="json"))}
    )


def time_axis(frame: pd.DataFrame, policy: SplitPolicy) -> np.ndarray:
    """The split axis as int64: nanoseconds (UTC) for time, the rank for an order proxy."""
    if policy.time_column not in frame.columns:
        raise SplitError(f"the split column {policy.time_column!r} is not in the feature snapshot")
    column = frame[policy.time_column]
    if column.isna().any():
        raise SplitError(
            f"{int(column.isna().sum())} rows have no {policy.time_column}; they cannot be "
            "placed in time"
        )
    if policy.axis == "time":
        if not pd.api.types.is_datetime64_any_dtype(column):
            raise SplitError(f"{policy.time_column!r} is not a timestamp column")
        return column.dt.tz_convert("UTC").to_numpy(dtype="datetime64[ns]").astype("int64")
    return column.to_numpy(dtype="int64")


def window_units(policy: SplitPolicy, amount: int) -> int:
    return amount * _NS_PER_DAY if policy.axis == "time" else amount


def _describe(
    policy: SplitPolicy, axis: np.ndarray, frame: pd.DataFrame, label: str
) -> dict[str, Any]:
    first, last = int(axis.min()), int(axis.max())
    if policy.axis == "time":
        start: Any = pd.Timestamp(first, tz="UTC").isoformat()
        end: Any = pd.Timestamp(last, tz="UTC").isoformat()
    else:
        start, end = first, last
    events = int(frame[label].sum())
    return {
        "start": start,
        "end": end,
        "rows": len(frame),
        "patients": int(frame["patient_token"].nunique()),
        "events": events,
        "event_rate": round(events / len(frame), 6),
    }


def check_slice(name: str, frame: pd.DataFrame, label: str) -> None:
    if frame.empty:
        raise SplitError(f"the {name} slice is empty")
    classes = set(frame[label].unique().tolist())
    if len(classes) < 2:
        raise SplitError(
            f"the {name} slice has a single class ({label} = {sorted(classes)} for all "
            f"{len(frame)} rows); discrimination and calibration cannot be measured"
        )


def check_label_windows(
    policy: SplitPolicy, axes: dict[str, np.ndarray], frames: dict[str, pd.DataFrame]
) -> None:
    """Every period's last label window must close before the next period starts."""
    window = window_units(policy, policy.label_window)
    for earlier, later in pairwise(PERIODS):
        if frames[earlier].empty or frames[later].empty:
            continue
        closes = int(axes[earlier].max()) + window
        opens = int(axes[later].min())
        if closes >= opens:
            gap = (opens - int(axes[earlier].max())) / window_units(policy, 1)
            unit = "days" if policy.axis == "time" else "encounters"
            raise SplitLeakage(
                f"{earlier} labels can see into {later}: the last {earlier} {policy.time_column} "
                f"is {gap:g} {unit} before {later} starts, but the label window is "
                f"{policy.label_window} {unit}; raise split.embargo to at least "
                f"{policy.label_window}"
            )


def temporal_split(frame: pd.DataFrame, policy: SplitPolicy, label: str) -> TemporalSplit:
    """Cut the time axis at the declared fractions and leave the embargo before each cut."""
    for column in (label, "patient_token"):
        if column not in frame.columns:
            raise SplitError(f"the feature snapshot has no {column!r} column")
    axis = time_axis(frame, policy)
    f = policy.fractions
    cut_validation, cut_test = np.quantile(axis, [f.train, f.train + f.validation])
    embargo = window_units(policy, policy.embargo)
    masks = {
        "train": axis < cut_validation - embargo,
        "validation": (axis >= cut_validation) & (axis < cut_test - embargo),
        "test": axis >= cut_test,
    }
    frames = {p: frame.loc[m].reset_index(drop=True) for p, m in masks.items()}
    axes = {p: axis[m] for p, m in masks.items()}
    for period in PERIODS:
        check_slice(period, frames[period], label)
    check_label_windows(policy, axes, frames)
    summary = []
    train_patients = set(frames["train"]["patient_token"])
    for period in PERIODS:
        row = {"period": period, **_describe(policy, axes[period], frames[period], label)}
        if period != "train":
            seen = frames[period]["patient_token"].isin(train_patients)
            row["patients_also_in_train"] = int(frames[period].loc[seen, "patient_token"].nunique())
            row["rows_of_patients_in_train"] = int(seen.sum())
        summary.append(row)
    embargoed = len(frame) - sum(len(v) for v in frames.values())
    return TemporalSplit(
        train=frames["train"],
        validation=frames["validation"],
        test=frames["test"],
        policy=policy,
        embargoed_rows=embargoed,
        summary=summary,
    )


ERA = "era"


def era_labels(frame: pd.DataFrame, policy: SplitPolicy) -> pd.Series:
    """Calendar quarter of each row on the split's time axis (e.g. ``2024Q3``): the per-era
    slices show whether performance drifts within the test period."""
    if policy.axis != "time":
        raise SplitError(
            f"per-era slices need a time axis; {policy.time_column!r} is an order proxy with no "
            "calendar dates"
        )
    stamps = frame[policy.time_column].dt.tz_convert("UTC").dt.tz_localize(None)
    return stamps.dt.to_period("Q").astype(str)


def extra_slices(frame: pd.DataFrame, columns: list[str]) -> dict[str, pd.DataFrame]:
    """Per-site (or other) validation slices of a period, when the source has the column."""
    out: dict[str, pd.DataFrame] = {}
    for column in columns:
        if column not in frame.columns:
            raise SplitError(f"extra slice column {column!r} is not in the feature snapshot")
        for value, part in frame.groupby(column, observed=True, sort=True):
            out[f"{column}={value}"] = part.reset_index(drop=True)
    return out
