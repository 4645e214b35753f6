"""Serving-side scoring: the catalog's input contract, field-level errors, and features that
equal the pipeline's on real encounters."""

from __future__ import annotations

import math
import uuid

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.features import DIABETES130_INPUTS, build_features, feature_set_for
from hospital_mlops.normalize import HmacKey, normalize_extract
from hospital_mlops.scoring import (
    MAX_INSTANCES,
    InvalidRequest,
    diabetes130_features,
    score,
    validate_instances,
)
from hospital_mlops.sources.extract import read_extract
from hospital_mlops.train import train_risk_model
from hospital_mlops.use_case import TrainingConfig
from tests.unit.test_registry import _features


def _jsonable(value: object) -> object:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


@pytest.fixture(scope="module")
def real(catalog, d130_small):
    spec = catalog.source("diabetes130")
    normalized, _ = normalize_extract(
        read_extract(d130_small, spec), spec, HmacKey(b"k" * 40, False)
    )
    pipeline, _ = build_features("diabetes130", normalized)
    encounters = normalized["encounters"].set_index("encounter_token")
    rows = encounters.loc[pipeline["encounter_token"]]
    instances = [
        {**{c: _jsonable(row[c]) for c in DIABETES130_INPUTS}, "prior_encounters": int(prior)}
        for (_, row), prior in zip(
            rows.iterrows(), pipeline["earlier_encounters_in_extract"], strict=True
        )
    ]
    return spec, pipeline, instances


def _clean(real) -> dict:
    return dict(real[2][0])


def test_serving_features_equal_the_pipelines_on_real_encounters(real) -> None:
    spec, pipeline, instances = real
    fs = feature_set_for("diabetes130")
    parts, missing = [], []
    for start in range(0, len(instances), MAX_INSTANCES):  # as a client would batch them
        encounters, prior, absent = validate_instances(
            instances[start : start + MAX_INSTANCES], spec
        )
        parts.append(diabetes130_features(encounters, prior))
        missing += absent
    served = pd.concat(parts, ignore_index=True)
    names = [f.name for f in fs.features]
    pd.testing.assert_frame_equal(
        served[names].reset_index(drop=True), pipeline[names].reset_index(drop=True)
    )
    assert len(instances) > 10_000  # the whole (sub-sampled) real extract, not a toy row
    # optional inputs the feed may lack are flagged, not invented
    assert any("race" in m for m in missing)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("time_in_hospital", "3", "must be a number, got str"),
        ("time_in_hospital", 99, "outside the plausible range 1.0–14.0 day"),
        ("time_in_hospital", 2.5, "must be a whole number"),
        ("time_in_hospital", float("nan"), "must be a finite number"),
        ("time_in_hospital", float("inf"), "must be a finite number"),
        ("number_inpatient", True, "must be a number, got bool"),
        ("admission_type_id", 99, "is not a code of the admission_type_id code table"),
        ("A1Cresult", ">9", "is not one of"),
        ("gender", "x" * 500, "longer than 64"),
        ("num_medications", None, "is required"),
        ("prior_encounters", -1, "from 0 to 500"),
        ("favourite_colour", "blue", "is not an input of this model"),
    ],
)
def test_each_bad_field_is_named_with_its_reason(real, field, value, message) -> None:
    instance = _clean(real)
    instance[field] = value
    with pytest.raises(InvalidRequest) as err:
        validate_instances([_clean(real), instance], real[0])
    problems = [e for e in err.value.errors if e.field == field]
    assert problems and problems[0].instance == 1 and message in problems[0].message


def test_request_shape_limits(real) -> None:
    spec = real[0]
    for body, message in [
        ({"a": 1}, "must be a list"),
        ([], "must not be empty"),
        ([_clean(real)] * (MAX_INSTANCES + 1), f"at most {MAX_INSTANCES}"),
        (["not an object"], "must be an object"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            validate_instances(body, spec)


def test_the_answer_per_instance(real) -> None:
    spec, _, instances = real
    fs = feature_set_for("diabetes130")
    model = train_risk_model(
        _features(3000, 1), _features(1000, 2), fs, TrainingConfig(max_rounds=40)
    )
    hospice = dict(instances[1], discharge_disposition_id=13)
    answers = score([instances[0], hospice], spec, fs, model, threshold=0.15, model_version="7")
    for a in answers:
        assert {
            "risk", "band", "alert", "reasons", "missing_inputs", "model_version",
            "prediction_id", "limitations",
        } <= set(a)  # fmt: skip
        assert 0 < a["risk"] < 1 and a["model_version"] == "7"
        assert a["band"] == (
            "high" if a["risk"] >= 0.15 else "moderate" if a["risk"] >= 0.075 else "low"
        )
        assert 1 <= len(a["reasons"]) <= 3 and {"feature", "text", "contribution"} == set(
            a["reasons"][0]
        )
        uuid.UUID(a["prediction_id"])
    assert answers[0]["alert"] == (answers[0]["risk"] >= 0.15)
    assert (
        answers[1]["alert"] is False and "outside the intended use" in answers[1]["limitations"][0]
    )
    assert answers[0]["prediction_id"] != answers[1]["prediction_id"]
