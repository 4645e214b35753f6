"""diabetes130's encounter fields as monitoring subgroups, for the feature sets computed from
them: race as sent ("missing" in the features and an absent field are one group); gender through
the set's sex feature ("Female", "Male"; "Unknown/Invalid" and absent are one group); the age
band "[70-80)" through its midpoint (the ``age_years`` feature) to its decade;
``admission_source_id`` through the set's own admission-source category (emergency_room,
referral, transfer, other). Each set passes its own code tables, so the two sets on this source
stay independent."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

from hospital_mlops.features.subgroups import GROUP_UNKNOWN, GroupMap, as_text


def _decade(years: pd.Series) -> pd.Series:
    low = np.floor(pd.to_numeric(years, errors="coerce").astype("float64") / 10) * 10
    return pd.Series(
        [GROUP_UNKNOWN if math.isnan(v) else f"[{v:.0f}-{v + 10:.0f})" for v in low],
        index=years.index,
    )


def _band_midpoint(bands: pd.Series) -> pd.Series:
    low = bands.astype("string").str.extract(r"\[(\d+)-", expand=False).astype("float64")
    return low + 5.0


def diabetes130_subgroups(
    sex: Mapping[str, float], admission_source: Mapping[int, str]
) -> dict[str, GroupMap]:
    """The subgroup maps of a set whose features are ``race``, ``sex_male`` (``sex`` codes),
    ``age_years`` and ``admission_source`` (``admission_source`` codes → category)."""

    def sex_label(feature: pd.Series) -> pd.Series:
        return feature.map({1.0: "Male", 0.0: "Female"}).fillna(GROUP_UNKNOWN).astype(str)

    def source_category(codes: pd.Series) -> pd.Series:
        as_int = pd.to_numeric(codes, errors="coerce")
        return as_int.map(dict(admission_source)).fillna("other").astype(str)

    return {
        "race": GroupMap(
            "race", lambda s: as_text(s, ("missing",)), lambda s: as_text(s, ("missing",))
        ),
        "gender": GroupMap(
            "sex_male",
            lambda s: sex_label(s.map(dict(sex))),
            lambda s: sex_label(pd.to_numeric(s, errors="coerce")),
        ),
        "age": GroupMap("age_years", lambda s: _decade(_band_midpoint(s)), _decade),
        "admission_source_id": GroupMap(
            "admission_source",
            source_category,
            lambda s: s.where(s.notna(), "other").astype(str),
        ),
    }
