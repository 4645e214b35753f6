"""Versioned feature definitions: the one package the pipeline and the serving predictor share.

One module per feature set (``diabetes130``, ``synthetic``, ``post_acute_diabetes130``) over the
shared type (``base``), clinical groupings (``groupings``) and history (``history``); each set's
version hashes only its own definition and the shared code. This module is the registry: which
set each (source, use case) uses, and how each set is served (``served``).

A hospital adds a use case without editing this package: its own module registers its set with
``register_use_case_set`` on import, and ``HMLOPS_FEATURE_SET_MODULES`` (comma-separated module
names) makes every process import it (docs/adding-a-use-case.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping

import pandas as pd

from hospital_mlops.data.catalog import load_catalog
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
from hospital_mlops.features.diabetes130_subgroups import diabetes130_subgroups
from hospital_mlops.features.groupings import ICD9_GROUPS, icd9_group, icd9_group_of, icd10_group
from hospital_mlops.features.post_acute_diabetes130 import (
    ADMISSION_INPUTS,
    ADMISSION_SUBGROUPS,
    admission_feature_row,
    admission_features,
    post_acute_feature_set,
)
from hospital_mlops.features.served import InputField, ServedInputs, ServingRecipe, serve
from hospital_mlops.features.synthetic import SYNTHETIC, compute_synthetic
from hospital_mlops.use_case import UseCase, load_use_case

# Each source's set for the default use case (the readmission model's: the first document of
# config/use_case.yaml), and the sets of further use cases by (source, use case id), each built
# from its use case's declared label codes.
DEFAULT_USE_CASE = "readmission_30d_discharge"
FEATURE_SETS: dict[str, FeatureSet] = {fs.source: fs for fs in (DIABETES130, SYNTHETIC)}


def _post_acute(use_case: UseCase) -> FeatureSet:
    if use_case.label.codes is None:
        raise KeyError(f"use case {use_case.id!r} declares no label codes for its feature set")
    return post_acute_feature_set(use_case.label.codes)


USE_CASE_SETS: dict[tuple[str, str], Callable[[UseCase], FeatureSet]] = {
    ("diabetes130", "post_acute_at_admission"): _post_acute,
}

# How each set's model is served, by set name, where its inputs are raw catalogued columns
# rather than its own features (features/served.py).
SERVING_RECIPES: dict[str, ServingRecipe] = {
    DIABETES130.name: ServingRecipe(
        inputs=DIABETES130_INPUTS,
        feature_row=diabetes130_feature_row,
        features_frame=diabetes130_features,
        prior_feature="earlier_encounters_in_extract",
        outside_use_row=diabetes130_out_of_cohort_row,
        outside_use_frame=diabetes130_out_of_cohort,
        outside_use="outside the intended use: death or hospice discharge (not a readmission risk)",
        fhir_reader="hospital_mlops.ehr.fhir_readmission_inputs:model_inputs",
        subgroups=diabetes130_subgroups(SEX, ADMISSION_SOURCE),
    ),
    "post_acute_diabetes130": ServingRecipe(
        inputs=ADMISSION_INPUTS,
        feature_row=admission_feature_row,
        features_frame=admission_features,
        prior_feature="earlier_encounters_in_extract",
        fhir_reader="hospital_mlops.ehr.fhir_admission_inputs:admission_model_inputs",
        subgroups=ADMISSION_SUBGROUPS,
    ),
}


def feature_set_for(source: str, use_case: str | None = None) -> FeatureSet:
    """The feature set of ``source`` for ``use_case`` (None: the default use case)."""
    if use_case is None or use_case == DEFAULT_USE_CASE:
        if source not in FEATURE_SETS:
            raise KeyError(f"no feature set is defined for source {source!r}")
        return FEATURE_SETS[source]
    build = USE_CASE_SETS.get((source, use_case))
    if build is None:
        raise KeyError(f"no feature set is defined for source {source!r} and use case {use_case!r}")
    return build(load_use_case(use_case=use_case))


def primary_feature_set(use_case: UseCase) -> FeatureSet:
    """The set of ``use_case`` on the first source it declares (the one its models are served
    and its rules are written for)."""
    return feature_set_for(next(iter(use_case.sources)), use_case.id)


def feature_set_named(name: str) -> FeatureSet | None:
    """The installed set of this name (what a saved model records), or None."""
    for fs in FEATURE_SETS.values():
        if fs.name == name:
            return fs
    for source, use_case in USE_CASE_SETS:
        fs = feature_set_for(source, use_case)
        if fs.name == name:
            return fs
    return None


_SERVED: dict[int, tuple[FeatureSet, ServedInputs]] = {}


def served_inputs(fs: FeatureSet) -> ServedInputs:
    """What a served model of ``fs`` accepts; built once per set (every request reads it)."""
    cached = _SERVED.get(id(fs))
    if cached is None or cached[0] is not fs:
        if len(_SERVED) > 16:
            _SERVED.clear()
        served = serve(fs, SERVING_RECIPES.get(fs.name), load_catalog().source(fs.source))
        cached = _SERVED[id(fs)] = (fs, served)
    return cached[1]


def register_use_case_set(
    source: str,
    use_case: str,
    build: Callable[[UseCase], FeatureSet],
    recipe: ServingRecipe | None = None,
    *,
    name: str | None = None,
) -> None:
    """Register a further use case's feature set (from its own module, on import): ``build``
    makes the set from the use case's declaration; ``recipe`` (keyed by the set's ``name``)
    when requests carry raw catalogued columns rather than the features themselves."""
    if (source, use_case) in USE_CASE_SETS:
        raise ValueError(f"a feature set for ({source!r}, {use_case!r}) is registered already")
    USE_CASE_SETS[(source, use_case)] = build
    if recipe is not None:
        if name is None:
            raise ValueError("a serving recipe needs the set's name")
        SERVING_RECIPES[name] = recipe


def build_features(
    source: str, tables: Mapping[str, pd.DataFrame], use_case: str | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    fs = feature_set_for(source, use_case)
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
    "SERVING_RECIPES",
    "SEX",
    "SYNTHETIC",
    "FeatureDef",
    "FeatureSet",
    "InputField",
    "Kind",
    "ServedInputs",
    "band_midpoint",
    "build_features",
    "compute_diabetes130",
    "compute_synthetic",
    "diabetes130_feature_row",
    "diabetes130_features",
    "diabetes130_out_of_cohort",
    "diabetes130_out_of_cohort_row",
    "feature_set_for",
    "feature_set_named",
    "icd9_group",
    "icd9_group_of",
    "icd10_group",
    "primary_feature_set",
    "register_use_case_set",
    "served_inputs",
]  # fmt: skip

FEATURE_SET_MODULES = "HMLOPS_FEATURE_SET_MODULES"


def _import_registered_modules() -> None:
    """The modules ``HMLOPS_FEATURE_SET_MODULES`` names: each registers its sets on import."""
    for module in os.environ.get(FEATURE_SET_MODULES, "").split(","):
        if module.strip():
            importlib.import_module(module.strip())


_import_registered_modules()
