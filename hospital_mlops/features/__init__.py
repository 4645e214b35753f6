"""Versioned feature definitions: the one package the pipeline and the serving predictor share.

One module per feature set (``diabetes130``, ``synthetic``) over the shared type (``base``),
clinical groupings (``groupings``) and history (``history``); each set's version hashes only its
own definition and the shared code.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from hospital_mlops.features.base import (
    HISTORY_DAYS,
    LABEL,
    READMISSION_WINDOW_DAYS,
    FeatureDef,
    FeatureSet,
    Kind,
)
from hospital_mlops.features.diabetes130 import (
    ADMISSION_SOURCE,
    DIABETES130,
    DIABETES130_INPUTS,
    MEDICATIONS,
    SEX,
    band_midpoint,
    compute_diabetes130,
    diabetes130_feature_row,
    diabetes130_features,
    diabetes130_out_of_cohort,
    diabetes130_out_of_cohort_row,
)
from hospital_mlops.features.groupings import ICD9_GROUPS, icd9_group, icd9_group_of, icd10_group
from hospital_mlops.features.synthetic import SYNTHETIC, compute_synthetic

FEATURE_SETS: dict[str, FeatureSet] = {fs.source: fs for fs in (DIABETES130, SYNTHETIC)}


def feature_set_for(source: str) -> FeatureSet:
    if source not in FEATURE_SETS:
        raise KeyError(f"no feature set is defined for source {source!r}")
    return FEATURE_SETS[source]


def build_features(
    source: str, tables: Mapping[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, int]]:
    fs = feature_set_for(source)
    frame, stats = fs.compute(tables)
    return frame[fs.columns], stats


__all__ = [
    "ADMISSION_SOURCE",
    "DIABETES130",
    "DIABETES130_INPUTS",
    "FEATURE_SETS",
    "HISTORY_DAYS",
    "ICD9_GROUPS",
    "LABEL",
    "MEDICATIONS",
    "READMISSION_WINDOW_DAYS",
    "SEX",
    "SYNTHETIC",
    "FeatureDef",
    "FeatureSet",
    "Kind",
    "band_midpoint",
    "build_features",
    "compute_diabetes130",
    "compute_synthetic",
    "diabetes130_feature_row",
    "diabetes130_features",
    "diabetes130_out_of_cohort",
    "diabetes130_out_of_cohort_row",
    "feature_set_for",
    "icd9_group",
    "icd9_group_of",
    "icd10_group",
]  # fmt: skip
