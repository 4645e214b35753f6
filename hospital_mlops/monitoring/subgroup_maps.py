"""Subgroups: a break-down's request field and its test-period column mapped to one group
label, so a group means the same in a monitoring window and in the validated (test) period.

The break-downs (``config/monitoring.yaml`` ``breakdowns.by``) name request fields
as the EHR sends them; the test period holds the model's features. Both sides are mapped to one
label through the feature code itself (``hospital_mlops.features``), so a group means what the
model saw: race as sent ("missing" in the features and an absent field are one group); gender
through the sex feature ("Female", "Male"; "Unknown/Invalid" and absent are one group); age band
"[70-80)" through the band's midpoint to its decade; ``admission_source_id`` through the model's
admission-source category (emergency_room, referral, transfer, other). Another field is compared
as text with a test-period column of its own name; a field with no such column is "not run".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hospital_mlops.features import ADMISSION_SOURCE, SEX, band_midpoint

UNKNOWN = "(not sent or unknown)"


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


def mapped_labels(values: pd.Series, mapping: Callable[[pd.Series], pd.Series]) -> np.ndarray:
    """Each row's group label, mapping each distinct value once (a log holds millions of rows
    and a handful of values)."""
    codes, uniques = pd.factorize(values.astype(object))
    mapped = mapping(pd.Series([*uniques, None], dtype=object)).to_numpy(dtype=object)
    return np.asarray(mapped[np.where(codes < 0, len(uniques), codes)], dtype=object)
