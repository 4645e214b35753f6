"""How a feature set is served: the inputs a request carries, each one's contract, and the
row-wise twin of the set's frame code.

Two kinds of set:

- A set computed from catalogued encounter columns (diabetes130's) has a ``ServingRecipe``: the
  raw columns a request sends, the set's own row and frame functions (held equal by tests), and
  how a request falls outside the intended use. Each input's contract (type, code table,
  plausible range, whether the feed may lack it) is the catalog's, so serving accepts exactly
  what the pipeline validated.
- Any other set is served on its features themselves: each feature is an input, checked against
  its ``FeatureDef`` (kind, allowed values, range; nullable ones may be absent). A new use case
  is served with no serving code at all.

Recipes are registered beside the sets in ``features/__init__``; nothing here names a source.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import ColumnSpec, Range, SourceSpec
from hospital_mlops.features.base import FeatureDef, FeatureSet
from hospital_mlops.features.subgroups import GroupMap, text_group_map

RowFn = Callable[[Mapping[str, Any], int], dict[str, Any]]
FrameFn = Callable[[pd.DataFrame, np.ndarray], pd.DataFrame]

# the request field of the patient's earlier admissions, sent by the EHR
PRIOR_ENCOUNTERS = "prior_encounters"


@dataclass(frozen=True)
class InputField:
    name: str
    spec: ColumnSpec
    required: bool
    codes: frozenset[str] | None  # the code table's codes, for coded inputs


@dataclass(frozen=True)
class ServingRecipe:
    """A set served on raw catalogued encounter columns."""

    inputs: tuple[str, ...]  # columns of the source's ``encounters`` table
    feature_row: RowFn  # one validated row + its earlier-encounter count → features
    features_frame: FrameFn  # the same on a typed frame (the pipeline's own code)
    prior_feature: str  # the feature that holds the earlier-encounter count
    outside_use_row: Callable[[Mapping[str, Any]], bool] | None = None
    outside_use_frame: Callable[[pd.DataFrame], np.ndarray] | None = None
    outside_use: str = ""  # the limitation an answer outside the intended use carries
    # How a CDS service reads these inputs from FHIR: "module:function" of the set's FHIR
    # mapping (a reader of the EHR layer, above this one, named rather than imported); "": the
    # set is not offered on a CDS service.
    fhir_reader: str = ""
    # Monitoring break-downs: how a raw request field and its feature become one subgroup label
    # (features/subgroups.py); a field not listed is compared as text.
    subgroups: Mapping[str, GroupMap] = field(default_factory=dict)


@dataclass(frozen=True)
class ServedInputs:
    """What a served model of ``feature_set`` accepts and how its features are computed."""

    feature_set: FeatureSet
    fields: tuple[InputField, ...]
    recipe: ServingRecipe | None  # None: the features are the inputs

    @property
    def counts_prior_encounters(self) -> bool:
        """Whether a request sends the patient's earlier admissions (``prior_encounters``)."""
        return self.recipe is not None

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def outside_use(self) -> str:
        return self.recipe.outside_use if self.recipe else ""

    def feature_row(self, row: Mapping[str, Any], earlier_encounters: int) -> dict[str, Any]:
        if self.recipe is not None:
            return self.recipe.feature_row(row, earlier_encounters)
        return {f.name: _feature_value(f, row[f.name]) for f in self.feature_set.features}

    def features(self, encounters: pd.DataFrame, earlier: np.ndarray) -> pd.DataFrame:
        if self.recipe is not None:
            return self.recipe.features_frame(encounters, earlier)
        out = pd.DataFrame(index=encounters.index)
        for f in self.feature_set.features:
            column = encounters[f.name]
            out[f.name] = (
                column.astype(object)
                if f.kind == "categorical"
                else pd.to_numeric(column, errors="raise").astype("float64")
            )
        return out

    def group_map(self, request_field: str) -> GroupMap:
        """How a monitoring break-down by ``request_field`` labels its groups."""
        listed = self.recipe.subgroups.get(request_field) if self.recipe else None
        return listed or text_group_map(request_field)

    def outside_row(self, row: Mapping[str, Any]) -> bool:
        check = self.recipe.outside_use_row if self.recipe else None
        return bool(check(row)) if check else False

    def outside(self, encounters: pd.DataFrame) -> np.ndarray:
        check = self.recipe.outside_use_frame if self.recipe else None
        if check is None:
            return np.zeros(len(encounters), dtype=bool)
        return np.asarray(check(encounters), dtype=bool)

    def instance_of(self, features: Mapping[str, Any], encounter: Mapping[str, Any]) -> dict:
        """A request instance for one row of the set's frame (``features``) and its normalized
        encounter row: what the EHR would send for it. JSON-ready (missing → None)."""
        if self.recipe is None:
            return {f.name: jsonable(features[f.name]) for f in self.feature_set.features}
        return {
            **{c: jsonable(encounter[c]) for c in self.recipe.inputs},
            PRIOR_ENCOUNTERS: int(features[self.recipe.prior_feature]),
        }


def _feature_value(f: FeatureDef, value: Any) -> Any:
    if f.kind == "categorical":
        return value
    return math.nan if value is None else float(value)


def jsonable(value: Any) -> Any:
    """A pandas/numpy cell as the JSON value a client sends (missing → None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def catalog_fields(source: SourceSpec, inputs: tuple[str, ...]) -> tuple[InputField, ...]:
    """The contract of raw inputs: their catalog columns. A column the catalog allows to be
    missing in the feed is optional and flagged when absent."""
    columns = source.tables["encounters"].columns

    def codes(spec: ColumnSpec) -> frozenset[str] | None:
        return frozenset(source.code_tables[spec.code_table]) if spec.code_table else None

    return tuple(
        InputField(name, columns[name], columns[name].max_missing == 0, codes(columns[name]))
        for name in inputs
    )


def feature_fields(fs: FeatureSet) -> tuple[InputField, ...]:
    """The contract of a set served on its features: each definition as a column spec."""

    def spec(f: FeatureDef) -> ColumnSpec:
        low, high = (0.0, 1.0) if f.kind == "binary" else (f.min_value, f.max_value)
        bounded = low is not None or high is not None
        return ColumnSpec(
            type="string" if f.kind == "categorical" else "float",
            description=f.clinical_wording,
            provenance="clinical_truth",
            allowed=list(f.allowed) if f.allowed is not None else None,
            range=Range(min=low, max=high) if bounded else None,
            max_missing=1.0 if f.nullable else 0.0,
        )

    return tuple(InputField(f.name, spec(f), not f.nullable, None) for f in fs.features)


def serve(fs: FeatureSet, recipe: ServingRecipe | None, source: SourceSpec) -> ServedInputs:
    fields = catalog_fields(source, recipe.inputs) if recipe else feature_fields(fs)
    return ServedInputs(fs, fields, recipe)
