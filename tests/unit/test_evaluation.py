"""Evaluation from a predictions frame alone, the subgroup policy and the model gates."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.splits import SplitError
from hospital_mlops.model.evaluate.evaluation import evaluate_predictions, headline
from hospital_mlops.model.evaluate.gates import check_model_gates, justification_records
from hospital_mlops.model.evaluate.subgroups import SubgroupError
from hospital_mlops.use_case import (
    Justification,
    SubgroupPolicy,
    UseCase,
    UseCaseError,
    load_use_case,
)

TODAY = date(2026, 12, 6)


@pytest.fixture(scope="module")
def use_case() -> UseCase:
    uc = load_use_case()
    return uc.model_copy(
        update={"evaluation": uc.evaluation.model_copy(update={"bootstrap_replicates": 100})}
    )


def _predictions(n: int = 6000, seed: int = 2, group_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.choice(["A", "B"], n, p=[0.7, 0.3])
    signal = rng.normal(0, 1, n)
    true_logit = -2.2 + 0.9 * signal
    y = rng.binomial(1, 1 / (1 + np.exp(-true_logit)))
    score = 1 / (1 + np.exp(-(true_logit + np.where(group == "B", group_shift, 0.0))))
    comparator = 1 / (1 + np.exp(-(-2.2 + 0.3 * signal + rng.normal(0, 1, n))))
    return pd.DataFrame(
        {
            "encounter_token": [f"e{i}" for i in range(n)],
            "patient_token": [f"p{i // 2}" for i in range(n)],
            "label": y,
            "score": score,
            "comparator_score": comparator,
            "race": group,
            "sex_male": rng.integers(0, 2, n).astype(float),
            "age_years": rng.uniform(20, 95, n),
            "admission_source": rng.choice(["emergency_room", "referral"], n),
        }
    )


def _evaluate(use_case: UseCase, predictions: pd.DataFrame) -> dict:
    scores = predictions["score"] if len(predictions) else pd.Series([0.5])
    thresholds = {
        name: float(np.quantile(scores, 1 - u.alerts_per_100 / 100))
        for name, u in use_case.thresholds.uses.items()
    }
    return evaluate_predictions(
        predictions, thresholds, use_case, use_case.for_source("diabetes130")
    )


def test_a_good_calibrated_model_passes_every_gate(use_case) -> None:
    evaluation = _evaluate(use_case, _predictions(n=20_000))
    top = headline(evaluation)
    assert top["auroc_ci"][0] < top["auroc"] < top["auroc_ci"][1]
    assert top["auroc"] > top["comparator_auroc"]
    assert 0.85 < top["calibration_slope"] < 1.15 and top["ece"] < 0.02
    assert top["alerts_per_100"] == pytest.approx(10, abs=0.5)
    gates = check_model_gates(
        evaluation, use_case.for_source("diabetes130").gates, use_case.subgroup_policy, TODAY
    )
    assert [g.name for g in gates if not g.passed] == [], gates
    assert {g.name for g in gates} >= {"calibration_slope", "ece", "beats_comparator"}
    curve = evaluation["decision_curve"]
    assert curve[0]["threshold"] == 0.05 and curve[-1]["threshold"] == 0.5


def test_a_miscalibrated_group_is_flagged_and_blocks_the_gate(use_case) -> None:
    evaluation = _evaluate(use_case, _predictions(group_shift=1.2))
    assert "race=B:observed_to_expected" in evaluation["subgroup_flags"]
    gates = {
        g.name: g
        for g in check_model_gates(
            evaluation, use_case.for_source("diabetes130").gates, use_case.subgroup_policy, TODAY
        )
    }
    assert not gates["subgroups_justified"].passed
    assert "race=B:observed_to_expected" in gates["subgroups_justified"].observed
    flags = evaluation["subgroup_flags"]

    def justified(relative: str, written_on: date) -> SubgroupPolicy:
        note = Justification(text="reviewed by the clinical owner, with reasons", by="committee",
                             written_on=written_on, relative_to_evaluation=relative)  # fmt: skip
        return use_case.subgroup_policy.model_copy(
            update={"justifications": {f: note for f in flags}}
        )

    gates_of = use_case.for_source("diabetes130").gates
    before = {
        g.name: g
        for g in check_model_gates(evaluation, gates_of, justified("before", TODAY), TODAY)
    }
    assert before["subgroups_justified"].passed
    assert "post hoc" not in before["subgroups_justified"].observed
    # a justification written after the evaluation still answers the flag, but is named post hoc
    after = {
        g.name: g for g in check_model_gates(evaluation, gates_of, justified("after", TODAY), TODAY)
    }
    assert after["subgroups_justified"].passed
    assert "post hoc" in after["subgroups_justified"].observed
    # one that says "before" but is dated after the evaluation is post hoc by its date
    later = justified("before", TODAY + timedelta(days=1))
    records = justification_records(flags, later, TODAY)
    assert records and all(r["post_hoc"] for r in records)
    assert justification_records(flags, justified("before", TODAY), TODAY)[0]["post_hoc"] is False


def test_too_good_to_be_true_fails_as_leakage(use_case) -> None:
    predictions = _predictions()
    predictions["score"] = np.where(predictions["label"] == 1, 0.8, 0.05)
    gates = {
        g.name: g
        for g in check_model_gates(
            _evaluate(use_case, predictions),
            use_case.for_source("diabetes130").gates,
            use_case.subgroup_policy,
            TODAY,
        )
    }
    assert not gates["suspected_leakage"].passed


def test_evaluation_is_deterministic_given_the_predictions(use_case) -> None:
    # (recomputing the numbers from saved predictions with sklearn is the integration test's)
    predictions = _predictions()
    assert _evaluate(use_case, predictions) == _evaluate(use_case, predictions.copy())


def test_bad_slices_and_missing_subgroup_columns_are_refused(use_case) -> None:
    predictions = _predictions()
    with pytest.raises(SplitError, match="single class"):
        _evaluate(use_case, predictions.assign(label=0))
    with pytest.raises(SplitError, match="empty"):
        _evaluate(use_case, predictions.iloc[:0])
    with pytest.raises(SubgroupError, match="needs column 'race'"):
        _evaluate(use_case, predictions.drop(columns="race"))


def test_use_case_errors_name_the_yaml_path(tmp_path) -> None:
    bad = tmp_path / "use_case.yaml"
    text = (load_use_case.__globals__["config_path"]("use_case.yaml")).read_text()
    bad.write_text(text.replace("alerts_per_100: 10", "alerts_per_100: 150"))
    with pytest.raises(UseCaseError, match=r"thresholds\.uses\.discharge_planning\.alerts_per_100"):
        load_use_case(bad)
    with pytest.raises(UseCaseError, match="declares no split"):
        load_use_case().for_source("pharmacy")
