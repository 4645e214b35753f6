"""The second use case through `hmlops pipeline run --use-case` (kfp.local), as a user runs it:
its own feature set and label, its own pre-declared gates and thresholds, its own registered
model name. Whether it passes its gates is the evaluation's answer, not the test's: the test
holds that the verdict and the registration agree."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from hospital_mlops import artifacts
from hospital_mlops.use_case import load_use_case
from tests.integration.conftest import hmlops, run_json

pytestmark = pytest.mark.slow
USE_CASE = "post_acute_at_admission"


@pytest.fixture(scope="module")
def post_acute_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("post_acute_store")
    summary, proc = run_json("--source", "diabetes130", "--use-case", USE_CASE, "--out", str(out))
    # a model that fails its gates fails the run (exit 1), with every data gate passed
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    assert all(g["success"] for g in summary["gates"]), summary["gates"]
    return out, summary


def test_the_second_model_is_trained_on_its_own_features_and_label(post_acute_run) -> None:
    out, summary = post_acute_run
    model = summary["model"]
    assert model["name"] == load_use_case(use_case=USE_CASE).model_name == "post-acute-at-admission"
    training = json.loads(next(out.glob(f"runs/*/model/{artifacts.TRAINING}")).read_text())
    assert training["feature_set_version"].startswith("post_acute_diabetes130@")
    assert training["comparator"]["columns"] == ["age_years", "admission_source"]
    # the model's own input rows (its golden predictions): admission-time features only
    golden = pd.read_parquet(next(out.glob(f"runs/*/kfp/**/{artifacts.GOLDEN}")))
    features = set(golden.columns) - {"expected_risk"}
    assert {"age_years", "admission_source", "payer", "admitting_specialty"} <= features
    for during_the_stay in ("length_of_stay_days", "num_medications", "primary_diagnosis_group"):
        assert during_the_stay not in features
    predictions = pd.read_parquet(next(out.glob(f"runs/*/kfp/**/{artifacts.TEST_PREDICTIONS}")))
    assert 0.15 < predictions["label"].mean() < 0.6  # post-acute discharges, not readmissions


def test_its_own_pre_declared_gates_decide_its_registration(post_acute_run) -> None:
    out, summary = post_acute_run
    declared = load_use_case(use_case=USE_CASE).for_source("diabetes130").gates
    gates = {g["name"]: g for g in summary["model_gates"]}
    assert (
        gates["auroc_lower_bound"]["required"] == f"lower bound ≥ {declared.min_auroc_lower_bound}"
    )
    assert gates["ece"]["required"] == f"≤ {declared.max_ece}"
    record = json.loads(next(out.glob(f"runs/*/kfp/**/{artifacts.GATES}")).read_text())
    assert record["gates_declared_on"] == "2026-12-06"
    assert record["gates_declared"] in ("before the evaluation", "on the evaluation's day")
    passed = all(g["passed"] for g in gates.values())
    assert summary["model_gates_passed"] is passed
    assert (summary["model"]["version"] is not None) is passed
    if not passed:  # logged with its evidence, never registered
        assert summary["model"]["run_id"]
        shown = hmlops("registry", "show", "--model", "post-acute-at-admission", "--json")
        assert shown.returncode != 0 or not json.loads(shown.stdout)["versions"]


def test_an_unknown_use_case_is_one_clear_line(tmp_path: Path) -> None:
    proc = hmlops("pipeline", "run", "--use-case", "triage", "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "hmlops: error: no use case 'triage'; declared: readmission_30d_discharge, "
        "post_acute_at_admission"
    ]
