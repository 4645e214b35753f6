"""Serving-side scoring: the catalog's input contract, field-level errors, and features that
equal the pipeline's on real encounters."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.features import (
    DIABETES130_INPUTS,
    ServedInputs,
    build_features,
    diabetes130_feature_row,
    diabetes130_features,
    diabetes130_out_of_cohort,
    diabetes130_out_of_cohort_row,
    feature_set_for,
    served_inputs,
)
from hospital_mlops.features.served import jsonable
from hospital_mlops.model.reasons import attribute, reason_codes
from hospital_mlops.model.scoring import (
    MAX_INSTANCES,
    MAX_TEXT,
    MISSING_ROWS,
    PRIOR_ENCOUNTERS,
    PRIOR_ENCOUNTERS_MAX,
    InvalidRequest,
    Tensor,
    instances_from_v2,
    score,
    v2_outputs,
    validate_instances,
)
from hospital_mlops.model.train import RiskModel, RowScorer, _DirectPrediction, train_risk_model
from hospital_mlops.model.tree_shap import PathTables
from hospital_mlops.use_case import TrainingConfig
from tests.unit.test_registry import _features


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
        {**{c: jsonable(row[c]) for c in DIABETES130_INPUTS}, "prior_encounters": int(prior)}
        for (_, row), prior in zip(
            rows.iterrows(), pipeline["earlier_encounters_in_extract"], strict=True
        )
    ]
    return served_inputs(feature_set_for("diabetes130")), pipeline, instances


def _clean(real) -> dict:
    return dict(real[2][0])


def test_serving_features_equal_the_pipelines_on_real_encounters(real) -> None:
    served, pipeline, instances = real
    fs = feature_set_for("diabetes130")
    parts, missing = [], []
    for start in range(0, len(instances), MAX_INSTANCES):  # as a client would batch them
        request = validate_instances(instances[start : start + MAX_INSTANCES], served)
        parts.append(diabetes130_features(request.encounters, request.prior_encounters))
        missing += request.missing
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
    served = real[0]
    for body, message in [
        ({"a": 1}, "must be a list"),
        ([], "must not be empty"),
        ([_clean(real)] * (MAX_INSTANCES + 1), f"at most {MAX_INSTANCES}"),
        (["not an object"], "must be an object"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            validate_instances(body, served)


def test_the_answer_per_instance(real) -> None:
    served, _, instances = real
    fs = feature_set_for("diabetes130")
    model = train_risk_model(
        _features(3000, 1), _features(1000, 2), fs, TrainingConfig(max_rounds=40)
    )
    hospice = dict(instances[1], discharge_disposition_id=13)
    answers = score([instances[0], hospice], served, model, threshold=0.15, model_version="7")
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


@pytest.fixture(scope="module")
def small_model():
    fs = feature_set_for("diabetes130")
    return fs, train_risk_model(
        _features(3000, 1), _features(1000, 2), fs, TrainingConfig(max_rounds=40)
    )


NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_data_freshness_is_the_age_of_the_newest_observation(real, small_model) -> None:
    served, _, instances = real
    _fs, model = small_model
    fresh = dict(
        instances[0],
        observation_times={
            "num_lab_procedures": (NOW - timedelta(hours=3)).isoformat(),
            "A1Cresult": "2026-11-28T11:00:00Z",
        },
    )
    stale = dict(instances[1], observation_times={"num_medications": "2026-11-25T12:00:00+00:00"})
    answers = score([fresh, stale, instances[2]], served, model, 0.15, "7", now=NOW)
    assert answers[0]["data_freshness"] == {
        "newest_observation": "2026-11-28T11:00:00Z",
        "age_seconds": 3600.0,
        "stale": False,
    }
    assert answers[1]["data_freshness"]["stale"] is True
    assert any("72 hours old" in text for text in answers[1]["limitations"])
    assert answers[2]["data_freshness"] is None  # no times sent: nothing is invented
    assert answers[0]["scored_at"] == "2026-11-28T12:00:00Z"


def test_an_encounter_token_is_accepted_but_is_not_a_model_input(real, small_model) -> None:
    served, _, instances = real
    _fs, model = small_model
    token = "e3b0c44298fc1c149afbf4c8996fb924"
    with_token = score(
        [dict(instances[0], encounter_token=token)], served, model, 0.15, "7", now=NOW
    )
    without = score([instances[0]], served, model, 0.15, "7", now=NOW)
    assert with_token[0]["risk"] == without[0]["risk"]
    assert with_token[0]["reasons"] == without[0]["reasons"]
    request = validate_instances([dict(instances[0], encounter_token=token), instances[1]], served)
    assert request.encounter_tokens == [token, None]


@pytest.mark.parametrize("token", ["12345678", 12345678, "patient 4/7 ward B", "x" * 129, ""])
def test_a_raw_identifier_is_refused_as_an_encounter_token(real, token) -> None:
    served, _, instances = real
    with pytest.raises(InvalidRequest) as caught:
        validate_instances([dict(instances[0], encounter_token=token)], served)
    (error,) = caught.value.errors
    assert error.field == "encounter_token" and "never a raw identifier" in error.message


@pytest.mark.parametrize(
    ("times", "field", "message"),
    [
        ("yesterday", "observation_times", "must be an object"),
        ({"num_lab_procedures": "2026-11-28T10:00:00"}, "num_lab_procedures", "UTC offset"),
        ({"num_lab_procedures": "not a time"}, "num_lab_procedures", "ISO 8601"),
        ({"num_lab_procedures": "2026-11-29T10:00:00Z"}, "num_lab_procedures", "in the future"),
        ({"shoe_size": "2026-11-28T10:00:00Z"}, "shoe_size", "not an input"),
    ],
)
def test_bad_observation_times_are_named(real, times, field, message) -> None:
    instance = dict(_clean(real), observation_times=times)
    with pytest.raises(InvalidRequest) as err:
        validate_instances([instance], real[0], now=NOW)
    problem = err.value.errors[0]
    assert problem.field.endswith(field) and message in problem.message


def _as_v2(instances: list[dict]) -> list[Tensor]:
    """As an OIP client sends them: no null; an input no row has is omitted, one some rows
    lack names them in ``missing_rows``."""
    tensors = []
    for name in instances[0]:
        values = [i.get(name) for i in instances]
        missing = [str(n) for n, v in enumerate(values) if v is None]
        if len(missing) == len(values):
            continue
        number = all(isinstance(v, int | float) for v in values if v is not None)
        data = [(0 if number else "") if v is None else v for v in values]
        parameters = {MISSING_ROWS: ",".join(missing)} if missing else None
        tensors.append(Tensor(name, "FP64" if number else "BYTES", [len(values)], data, parameters))
    return tensors


def test_v2_tensors_give_the_same_answers_as_v1(real, small_model) -> None:
    served, _, instances = real
    _fs, model = small_model
    sample = instances[:20]
    assert any(v is None for i in sample for v in i.values())  # the missing rows are exercised
    from_v2 = instances_from_v2(_as_v2(sample))
    assert from_v2 == [{k: v for k, v in i.items() if v is not None} for i in sample]
    assert (
        score(from_v2, served, model, 0.15, "7", now=NOW)[0]["risk"]
        == (score(sample[:1], served, model, 0.15, "7", now=NOW)[0]["risk"])
    )
    v1 = score(sample, served, model, 0.15, "7", now=NOW)
    outputs = {t.name: t for t in v2_outputs(v1)}
    assert outputs["risk"].data == [a["risk"] for a in v1] and outputs["risk"].shape == [20]
    assert outputs["alert"].datatype == "BOOL"
    assert [json.loads(r) for r in outputs["reasons"].data] == [a["reasons"] for a in v1]


@pytest.mark.parametrize(
    ("tensors", "field", "message"),
    [
        ([], "inputs", "must not be empty"),
        ([Tensor("age", "BYTES", [2, 2], ["a"] * 4)], "inputs.age", "shape"),
        ([Tensor("age", "BYTES", [2], ["[70-80)"])], "inputs.age", "must hold 2 values"),
        ([Tensor("age", "BYTES", [101], ["x"] * 101)], "inputs.age", "rows must be from 1"),
        ([Tensor("age", "BOOL", [1], [True])], "inputs.age", "datatype"),
        ([Tensor("race", "BYTES", [2], ["x", None])], "inputs.race", "missing_rows"),
        (
            [Tensor("race", "BYTES", [2], ["x", ""], {MISSING_ROWS: "1;0"})],
            "inputs.race.parameters.missing_rows",
            "row numbers",
        ),
        (
            [Tensor("race", "BYTES", [2], ["x", ""], {MISSING_ROWS: "2"})],
            "inputs.race.parameters.missing_rows",
            "names row 2 of 2",
        ),
        (
            [Tensor("age", "BYTES", [1], ["x"]), Tensor("gender", "BYTES", [2], ["F", "M"])],
            "inputs",
            "same number of rows",
        ),
    ],
)
def test_bad_v2_tensors_are_named(tensors, field, message) -> None:
    with pytest.raises(InvalidRequest) as err:
        instances_from_v2(tensors)
    assert err.value.errors[0].field == field and message in err.value.errors[0].message


# --- the row-wise serving path equals the pipeline's frame code ---------------------------------

FS = feature_set_for("diabetes130")
NAMES = [f.name for f in FS.features]


def _row_features(request) -> pd.DataFrame:
    rows = [
        diabetes130_feature_row(row, int(prior))
        for row, prior in zip(request.rows, request.prior_encounters, strict=True)
    ]
    return pd.DataFrame(rows, columns=NAMES)


@pytest.fixture(scope="module")
def served_rows(real) -> list[dict]:
    """The serving path's feature rows of every real encounter, in requests of 100."""
    served, _, instances = real
    rows: list[dict] = []
    for start in range(0, len(instances), MAX_INSTANCES):
        request = validate_instances(instances[start : start + MAX_INSTANCES], served)
        rows += _row_features(request).to_dict("records")
        assert [diabetes130_out_of_cohort_row(r) for r in request.rows] == (
            diabetes130_out_of_cohort(request.encounters).tolist()
        )
    return rows


def test_row_features_equal_the_pipelines_on_every_real_encounter(real, served_rows) -> None:
    _, pipeline, instances = real
    pd.testing.assert_frame_equal(
        pd.DataFrame(served_rows, columns=NAMES), pipeline[NAMES].reset_index(drop=True)
    )
    assert len(served_rows) == len(instances) > 10_000
    served = pd.DataFrame(served_rows)
    assert (served["race"] == "missing").any()
    assert served["primary_diagnosis_group"].nunique() == 10  # every group, "missing" included


_ICD9_LIKE = st.one_of(
    st.sampled_from(["428", "250.83", "250", "V57", "E880", "785", "786.05", "996.81", "038"]),
    st.from_regex(r"[VE]?[0-9]{1,4}(\.[0-9]{0,3})?", fullmatch=True),
    st.text(max_size=MAX_TEXT),  # the contract accepts any short text for diag_1
)


def _instances(served: ServedInputs) -> st.SearchStrategy[list[dict]]:
    """Valid requests over the whole contract: every allowed value and code, the ends of every
    range, absent optional inputs, ICD-9 codes of every shape."""
    required, optional = {}, {}
    for field in served.fields:
        if field.name == "diag_1":
            values = _ICD9_LIKE
        elif field.spec.allowed is not None:
            values = st.sampled_from(field.spec.allowed)
        elif field.codes is not None:
            values = st.sampled_from(sorted(int(c) for c in field.codes))
        else:
            assert field.spec.type == "integer" and field.spec.range is not None
            values = st.integers(int(field.spec.range.min or 0), int(field.spec.range.max or 0))
        if field.required:
            required[field.name] = values
        else:
            optional[field.name] = st.none() | values
    required[PRIOR_ENCOUNTERS] = st.integers(0, PRIOR_ENCOUNTERS_MAX)
    return st.lists(st.fixed_dictionaries(required, optional=optional), min_size=1, max_size=3)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_row_features_equal_the_frame_features_on_generated_requests(catalog, data) -> None:
    served = served_inputs(feature_set_for("diabetes130"))
    instances = data.draw(_instances(served))
    request = validate_instances(instances, served)
    frame = diabetes130_features(request.encounters, request.prior_encounters)
    pd.testing.assert_frame_equal(_row_features(request), frame[NAMES])
    assert [diabetes130_out_of_cohort_row(r) for r in request.rows] == (
        diabetes130_out_of_cohort(request.encounters).tolist()
    )


@pytest.fixture(scope="module")
def real_model(real) -> RiskModel:
    """A model fitted on real encounters, so its trees split on real categories."""
    pipeline = real[1]
    cut = int(len(pipeline) * 0.7)
    return train_risk_model(
        pipeline.iloc[:cut], pipeline.iloc[cut:], FS, TrainingConfig(max_rounds=80)
    )


def test_row_scorer_gives_the_models_risks_and_contributions(real, served_rows, real_model):
    pipeline = real[1]
    scorer = real_model.row_scorer(FS)
    assert real_model.row_scorer(FS) is scorer  # built once per model
    assert scorer.direct  # the C API path is the one measured here
    assert scorer.tables and scorer.risk_from_tables  # and so are the TreeSHAP tables
    assert scorer.compiled_tables  # in their compiled pass (numba is a dependency)
    parts = [
        scorer.risk_and_contributions(served_rows[i : i + MAX_INSTANCES])
        for i in range(0, len(served_rows), MAX_INSTANCES)
    ]
    risk = np.concatenate([p[0] for p in parts])
    contributions = np.concatenate([p[1] for p in parts])
    expected_risk = real_model.predict_risk(pipeline, FS)
    expected_contributions = real_model.contributions(pipeline, FS)
    # The risk is XGBoost's, bit for bit; the tables' TreeSHAP (float64) is within 1e-6 of
    # pred_contribs' (float32) on every real row.
    np.testing.assert_array_equal(risk, expected_risk)
    np.testing.assert_allclose(contributions, expected_contributions, rtol=0, atol=1e-6)
    for i in range(0, len(served_rows), 97):  # one encounter per request, as usually served
        one_risk, one_contributions = scorer.risk_and_contributions([served_rows[i]])
        assert one_risk[0] == expected_risk[i]
        np.testing.assert_allclose(one_contributions[0], expected_contributions[i], atol=1e-6)
    # a value outside the declared categories or a missing one is encoded as in training
    odd = [
        {**served_rows[0], "race": "not a category", "insulin": None},
        {**served_rows[1], "hba1c_result": math.nan, "num_medications": math.nan},
    ]
    odd_risk, odd_contributions = scorer.risk_and_contributions(odd)
    np.testing.assert_array_equal(odd_risk, real_model.predict_risk(pd.DataFrame(odd), FS))
    np.testing.assert_allclose(
        odd_contributions, real_model.contributions(pd.DataFrame(odd), FS), rtol=0, atol=1e-6
    )
    config = json.loads(real_model.booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "2"  # the caller's booster as it was


def test_without_the_direct_path_the_wrapper_gives_the_same_answers(
    served_rows, real_model, monkeypatch
) -> None:
    direct = real_model.row_scorer(FS)
    monkeypatch.setattr(_DirectPrediction, "if_identical", classmethod(lambda *args: None))
    wrapper = RowScorer(real_model, FS)
    assert direct.direct and not wrapper.direct
    rows = served_rows[:300]
    for mine, theirs in zip(
        direct.risk_and_contributions(rows), wrapper.risk_and_contributions(rows), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_the_numpy_pass_of_the_tables_gives_the_same_answers(
    served_rows, real_model, monkeypatch
) -> None:
    monkeypatch.setenv("HMLOPS_COMPILED_TREESHAP", "0")
    plain = RowScorer(real_model, FS)
    assert plain.tables and plain.risk_from_tables and not plain.compiled_tables
    compiled = real_model.row_scorer(FS)
    assert compiled.compiled_tables
    rows = served_rows[:300]
    for mine, theirs in zip(
        compiled.risk_and_contributions(rows), plain.risk_and_contributions(rows), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_without_the_tables_contributions_are_xgboosts_own(
    served_rows, real_model, monkeypatch
) -> None:
    monkeypatch.setattr(PathTables, "of_booster", classmethod(lambda *args: None))
    plain = RowScorer(real_model, FS)
    assert not plain.tables and not plain.risk_from_tables
    rows = served_rows[:300]
    frame = pd.DataFrame(rows)
    risk, contributions = plain.risk_and_contributions(rows)
    np.testing.assert_array_equal(risk, real_model.predict_risk(frame, FS))
    np.testing.assert_array_equal(contributions, real_model.contributions(frame, FS))


def test_score_answers_as_the_frame_path_does(real, real_model) -> None:
    served, _, instances = real
    hospice = dict(instances[3], discharge_disposition_id=13, race=None, diag_1=None)
    sample = [instances[0], hospice, *instances[4:200]]
    for batch in ([sample[0]], [sample[1]], sample[:MAX_INSTANCES], sample[MAX_INSTANCES:]):
        answers = score(batch, served, real_model, 0.15, "7", now=NOW)
        request = validate_instances(batch, served, now=NOW)
        features = diabetes130_features(request.encounters, request.prior_encounters)
        risk = real_model.predict_risk(features, FS)
        reasons = reason_codes(attribute(real_model, features, FS), features, FS)
        outside = diabetes130_out_of_cohort(request.encounters)
        assert [a["risk"] for a in answers] == [round(float(r), 6) for r in risk]
        given = [[(r["feature"], r["text"]) for r in a["reasons"]] for a in answers]
        assert given == [[(r.feature, r.text) for r in rr] for rr in reasons]
        # the served contributions come from the TreeSHAP tables: within 1e-6 (and rounding)
        np.testing.assert_allclose(
            [r["contribution"] for a in answers for r in a["reasons"]],
            [r.contribution for rr in reasons for r in rr],
            rtol=0,
            atol=2e-6,
        )
        assert [a["alert"] for a in answers] == [
            bool(r >= 0.15 and not o) for r, o in zip(risk, outside, strict=True)
        ]
        assert [a["missing_inputs"] for a in answers] == request.missing
    hospice_answer = score([hospice], served, real_model, 0.15, "7", now=NOW)[0]
    assert "outside the intended use" in hospice_answer["limitations"][0]
    assert hospice_answer["missing_inputs"] == ["race", "diag_1"]
