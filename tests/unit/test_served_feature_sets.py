"""One predictor for any registered model: a model trained on the synthetic source's feature set
(served on its features, with no serving code of its own) is registered in a real MLflow store
and served by the same ``RiskPredictor`` class as the readmission model, with its own request
contract, feature code and threshold."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pandas as pd
import pytest
from kserve.errors import InvalidInput

from hospital_mlops import artifacts
from hospital_mlops.features import SYNTHETIC, FeatureSet, feature_set_for, served_inputs
from hospital_mlops.governance import registration
from hospital_mlops.model.scoring import InvalidRequest, score, validate_instances
from hospital_mlops.model.train import model_hash, train_risk_model
from hospital_mlops.use_case import TrainingConfig
from serving.predictor import RiskPredictor
from tests.unit.test_registry import _features

NAME = "test-synthetic-served"
THRESHOLD = 0.2


def _frame(fs: FeatureSet, n: int, seed: int) -> pd.DataFrame:
    return _features(n, seed, fs, driver="admissions_prior_year")


def _instances(fs: FeatureSet, frame: pd.DataFrame) -> list[dict]:
    return [{f.name: row[f.name] for f in fs.features} for row in frame.to_dict("records")]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, pd.DataFrame]:
    fs = SYNTHETIC
    model = train_risk_model(
        _frame(fs, 3000, 1), _frame(fs, 1000, 2), fs, TrainingConfig(max_rounds=30)
    )
    work = tmp_path_factory.mktemp("synthetic_candidate")
    model.save(work / "risk_model")
    golden = _frame(fs, 200, 3)[[f.name for f in fs.features]]
    golden["expected_risk"] = model.predict_risk(golden, fs)
    training = work / artifacts.TRAINING
    training.write_text(
        json.dumps(
            {
                "use_case": "readmission_30d_discharge",
                "feature_set_version": fs.version,
                "thresholds": {"discharge_planning": THRESHOLD},
            }
        )
    )
    result = registration.log_candidate(
        NAME,
        registration.Candidate(
            model_dir=work / "risk_model",
            evidence={artifacts.TRAINING: training},
            params={"source": "synthetic"},
            metrics={"auroc": 0.7},
            tags={
                "intended_use": "test",
                "use_case": "readmission_30d_discharge",
                "lineage.model_sha256": model_hash(work / "risk_model"),
            },
            gates_passed=True,
            input_example=golden.drop(columns=["expected_risk"]).head(3),
            golden=golden,
        ),
    )
    test = _frame(fs, 20, 4)
    return int(result["version"]), test


def test_a_synthetic_source_model_is_served_by_the_same_predictor(registered) -> None:
    version, test = registered
    predictor = RiskPredictor("readmission", NAME, str(version), prediction_log_url=None)
    assert predictor.load(), predictor.not_ready_reason
    try:
        assert predictor.feature_set.name == SYNTHETIC.name
        assert predictor.threshold == THRESHOLD
        instances = _instances(SYNTHETIC, test)
        body = asyncio.run(predictor.predict({"instances": instances}))
        answers = body["predictions"]
        expected = predictor.model.predict_risk(
            test[[f.name for f in SYNTHETIC.features]], SYNTHETIC
        )
        assert [a["risk"] for a in answers] == [round(float(r), 6) for r in expected]
        assert all(a["threshold"] == THRESHOLD for a in answers)
        assert all(a["reasons"] for a in answers)
        # its contract is its own: the readmission model's raw inputs are not inputs here
        wrong = dict(instances[0], time_in_hospital=3, prior_encounters=1)
        with pytest.raises(InvalidInput) as refused:
            asyncio.run(predictor.predict({"instances": [wrong]}))
        errors = json.loads(str(refused.value.reason))["errors"]
        assert {e["field"] for e in errors} == {"time_in_hospital", "prior_encounters"}
        assert all(e["message"] == "is not an input of this model" for e in errors)
    finally:
        predictor.stop()


def test_a_set_served_on_its_features_checks_each_against_its_definition() -> None:
    served = served_inputs(SYNTHETIC)
    assert served.inputs == tuple(f.name for f in SYNTHETIC.features)
    assert not served.counts_prior_encounters
    instance = _instances(SYNTHETIC, _frame(SYNTHETIC, 1, 5))[0]
    bad = dict(instance, site="MOON", age_years=140.0, sex_male=2.0)
    del bad["service_line"]
    with pytest.raises(InvalidRequest) as err:
        validate_instances([instance, bad], served)
    problems = {e.field: e.message for e in err.value.errors}
    assert all(e.instance == 1 for e in err.value.errors)
    assert "'MOON' is not one of" in problems["site"]
    assert "outside the plausible range" in problems["age_years"]
    assert "outside the plausible range" in problems["sex_male"]
    assert problems["service_line"] == "is required"
    # a nullable feature may be absent: it is scored as missing and flagged
    nullable = next(f.name for f in SYNTHETIC.features if f.nullable)
    sparse = {k: v for k, v in instance.items() if k != nullable}
    request = validate_instances([sparse], served)
    assert request.missing == [[nullable]]
    assert math.isnan(served.feature_row(request.rows[0], 0)[nullable])


def test_the_admission_set_is_served_on_admission_inputs_only() -> None:
    served = served_inputs(feature_set_for("diabetes130", "post_acute_at_admission"))
    assert served.counts_prior_encounters
    stay = {"time_in_hospital", "num_medications", "num_lab_procedures", "diag_1"}
    assert not stay & set(served.inputs)
    assert served.outside_use == ""  # the disposition is not known at admission


def test_scoring_a_synthetic_model_in_process_equals_its_frame_path(registered) -> None:
    from hospital_mlops.governance import registry

    version, test = registered
    loaded = registry.load_risk_model(NAME, str(version))
    served = served_inputs(SYNTHETIC)
    answers = score(_instances(SYNTHETIC, test), served, loaded.model, THRESHOLD, "v")
    frame_risk = loaded.model.predict_risk(test, SYNTHETIC)
    np.testing.assert_allclose([a["risk"] for a in answers], frame_risk, atol=1e-6)
