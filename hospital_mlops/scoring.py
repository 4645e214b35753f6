"""Scoring one request: validate raw clinical inputs, build features with the pipeline's own
feature code, and answer per instance with risk, band, alert, reasons and limitations.

The input contract is generated from the data catalog (types, allowed values, code tables,
physiologic ranges in the declared unit), so serving accepts exactly what the pipeline
validated. Every problem becomes a ``FieldError`` naming the instance and the field; nothing here
raises anything else for bad input. The KServe predictor is a thin adapter over this module.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.catalog import ColumnSpec, SourceSpec
from hospital_mlops.features import (
    DIABETES130_INPUTS,
    FeatureSet,
    diabetes130_features,
    diabetes130_out_of_cohort,
)
from hospital_mlops.normalize import cast_column
from hospital_mlops.reasons import attribute, reason_codes
from hospital_mlops.train import RiskModel

MAX_INSTANCES = 100
MAX_TEXT = 64
PRIOR_ENCOUNTERS = "prior_encounters"  # sent by the EHR: the patient's earlier admissions
PRIOR_ENCOUNTERS_MAX = 500


@dataclass(frozen=True)
class FieldError:
    instance: int | None
    field: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class InvalidRequest(ValueError):
    """One or more field-level problems; rendered as a 400 listing every one."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        first = errors[0]
        where = f"instances[{first.instance}]." if first.instance is not None else ""
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"{where}{first.field}: {first.message}{more}")


@dataclass(frozen=True)
class InputField:
    name: str
    spec: ColumnSpec
    required: bool
    codes: frozenset[str] | None  # the code table's codes, for coded inputs


def input_fields(source: SourceSpec) -> list[InputField]:
    """The request schema for diabetes130: the catalogued columns the features read. A column
    the catalog allows to be missing in the feed is optional here and flagged when absent."""
    columns = source.tables["encounters"].columns

    def codes(spec: ColumnSpec) -> frozenset[str] | None:
        return frozenset(source.code_tables[spec.code_table]) if spec.code_table else None

    return [
        InputField(name, columns[name], columns[name].max_missing == 0, codes(columns[name]))
        for name in DIABETES130_INPUTS
    ]


def _check_value(field: InputField, value: Any) -> tuple[Any, str | None]:
    spec = field.spec
    if spec.type in ("integer", "float"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"must be a number, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return None, "must be a finite number"
        if spec.type == "integer":
            if float(value) != int(value):
                return None, f"must be a whole number, got {value!r}"
            value = int(value)
        if field.codes is not None and str(value) not in field.codes:
            return None, f"{value} is not a code of the {spec.code_table} code table"
        rng = spec.range
        if rng is not None and (
            (rng.min is not None and value < rng.min) or (rng.max is not None and value > rng.max)
        ):
            unit = f" {spec.unit}" if spec.unit else ""
            return None, f"{value}{unit} is outside the plausible range {rng.min}–{rng.max}{unit}"
        return value, None
    if not isinstance(value, str):
        return None, f"must be a string, got {type(value).__name__}"
    if len(value) > MAX_TEXT:
        return None, f"is longer than {MAX_TEXT} characters"
    if spec.allowed is not None and value not in spec.allowed:
        shown = spec.allowed if len(spec.allowed) <= 12 else [*spec.allowed[:12], "…"]
        return None, f"{value!r} is not one of {shown}"
    return value, None


def validate_instances(
    instances: Any, source: SourceSpec
) -> tuple[pd.DataFrame, np.ndarray, list[list[str]]]:
    """Raw instances → a typed encounter frame, the earlier-encounter counts and, per instance,
    the optional inputs that were missing. Raises ``InvalidRequest`` listing every problem."""
    if not isinstance(instances, list):
        raise InvalidRequest([FieldError(None, "instances", "must be a list of objects")])
    if not instances:
        raise InvalidRequest([FieldError(None, "instances", "must not be empty")])
    if len(instances) > MAX_INSTANCES:
        raise InvalidRequest(
            [FieldError(None, "instances", f"at most {MAX_INSTANCES} per request")]
        )
    fields = input_fields(source)
    known = {f.name for f in fields} | {PRIOR_ENCOUNTERS}
    errors: list[FieldError] = []
    rows: list[dict[str, Any]] = []
    prior: list[int] = []
    missing: list[list[str]] = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            errors.append(FieldError(i, "<instance>", "must be an object of named inputs"))
            continue
        for name in sorted(set(map(str, instance)) - known)[:10]:
            errors.append(FieldError(i, name[:MAX_TEXT], "is not an input of this model"))
        row: dict[str, Any] = {}
        absent: list[str] = []
        for field in fields:
            value = instance.get(field.name)
            if value is None:
                if field.required:
                    errors.append(FieldError(i, field.name, "is required"))
                else:
                    absent.append(field.name)
                row[field.name] = None
                continue
            checked, problem = _check_value(field, value)
            if problem:
                errors.append(FieldError(i, field.name, problem))
            row[field.name] = checked
        count = instance.get(PRIOR_ENCOUNTERS, 0)
        if (
            isinstance(count, bool)
            or not isinstance(count, int)
            or not (0 <= count <= PRIOR_ENCOUNTERS_MAX)
        ):
            errors.append(
                FieldError(
                    i, PRIOR_ENCOUNTERS, f"must be a whole number from 0 to {PRIOR_ENCOUNTERS_MAX}"
                )
            )
            count = 0
        rows.append(row)
        prior.append(int(count))
        missing.append(absent)
    if errors:
        raise InvalidRequest(errors)
    raw = pd.DataFrame(rows, columns=[f.name for f in fields])
    typed = pd.DataFrame({f.name: cast_column(raw[f.name], f.spec) for f in fields})
    return typed, np.asarray(prior, dtype="int64"), missing


def band_of(risk: float, threshold: float) -> str:
    """Three bands around the alert threshold: the alert itself is the 'high' band."""
    if risk >= threshold:
        return "high"
    if risk >= threshold / 2:
        return "moderate"
    return "low"


def score(
    instances: Any,
    source: SourceSpec,
    fs: FeatureSet,
    model: RiskModel,
    threshold: float,
    model_version: str,
) -> list[dict[str, Any]]:
    """The full answer per instance (the v1 ``predictions`` list)."""
    encounters, prior, missing = validate_instances(instances, source)
    features = diabetes130_features(encounters, prior)
    risk = model.predict_risk(features, fs)
    reasons = reason_codes(attribute(model, features, fs), features, fs)
    outside = diabetes130_out_of_cohort(encounters)
    out = []
    for i in range(len(encounters)):
        limitations = []
        if outside[i]:
            limitations.append(
                "outside the intended use: death or hospice discharge (not a readmission risk)"
            )
        if missing[i]:
            limitations.append("some inputs were not recorded; see missing_inputs")
        out.append(
            {
                "prediction_id": str(uuid.uuid4()),
                "risk": round(float(risk[i]), 6),
                "band": band_of(float(risk[i]), threshold),
                "alert": bool(risk[i] >= threshold and not outside[i]),
                "threshold": round(threshold, 6),
                "reasons": [r.as_dict() for r in reasons[i]],
                "missing_inputs": missing[i],
                "model_version": model_version,
                "limitations": limitations,
            }
        )
    return out
