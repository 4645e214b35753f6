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
from tests.html_checks import is_self_contained
from tests.integration.conftest import REVIEW_ROLES, free_port_base, hmlops, run_json

pytestmark = pytest.mark.slow
USE_CASE = "post_acute_at_admission"
MODEL = "post-acute-at-admission"


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
    # its data is read under its own declared purpose (the catalog permits it for diabetes130)
    assert summary["use"] == "post_acute_planning"
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
    # its evidence speaks of its own label: the data's limitations, then the use case's own
    card = next(out.glob(f"runs/*/kfp/**/{artifacts.MODEL_CARD_JSON}")).read_text()
    assert "discharge disposition as coded" in card and "Readmissions to other" not in card
    assert "encounter order stands in for time" in card  # the source's, from the catalog


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


@pytest.fixture(scope="module")
def post_acute_champion(post_acute_run) -> tuple[Path, int]:
    """The registered version, signed off by test reviewers and promoted to @champion."""
    from hospital_mlops.governance import registration

    out, summary = post_acute_run
    version = summary["model"]["version"]
    assert version is not None, summary["model_gates"]  # its gates passed: it is registered
    for role in REVIEW_ROLES:
        registration.sign_off(MODEL, int(version), role, f"Test {role} reviewer")
    registration.promote(MODEL, int(version), "champion", REVIEW_ROLES)
    return out, int(version)


def test_the_same_predictor_serves_the_second_model(post_acute_champion, tmp_path) -> None:
    import subprocess
    import sys

    import httpx

    from hospital_mlops.features.post_acute_diabetes130 import ADMISSION_INPUTS
    from serving.readiness import wait_until_ready

    printed = hmlops("serve", "--model", f"{MODEL}@champion", "--print-example-request")
    assert printed.returncode == 0, printed.stderr[-2000:]
    body = json.loads(printed.stdout)
    (instance,) = body["instances"]
    # a real admission from its own test period: admission-time inputs only
    assert set(instance) <= {*ADMISSION_INPUTS, "prior_encounters"}
    assert {"age", "admission_source_id", "prior_encounters"} <= set(instance)

    port = free_port_base(1)
    log = tmp_path / "predictor.log"
    argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
            "--model", f"{MODEL}@champion", "--port", str(port)]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=sink)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log, 180)
        url = f"http://127.0.0.1:{port}/v1/models/post-acute:predict"
        answer = httpx.post(url, json=body, timeout=30).json()["predictions"][0]
        training = json.loads(
            next(post_acute_champion[0].glob(f"runs/*/model/{artifacts.TRAINING}")).read_text()
        )
        assert answer["threshold"] == pytest.approx(training["thresholds"]["daily_worklist"])
        assert answer["model_version"] == f"{MODEL}/{post_acute_champion[1]}"
        assert 0 < answer["risk"] < 1 and answer["reasons"]
        # a stay-time input is not an input of an admission model: a 400 naming it
        stay = {"instances": [dict(instance, time_in_hospital=3)]}
        refused = httpx.post(url, json=stay, timeout=30)
        assert refused.status_code == 400
        assert "time_in_hospital" in refused.text and "not an input" in refused.text
        # the readmission model's name is not served here
        missing = httpx.post(f"http://127.0.0.1:{port}/v1/models/readmission:predict", json=body)
        assert missing.status_code == 404
        _the_admission_card_comes_from_this_predictor(port, post_acute_champion[1])
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_batch_worklist_of_the_second_model(post_acute_champion, tmp_path) -> None:
    import csv

    store, version = post_acute_champion
    out = tmp_path / "worklist"
    proc = hmlops("batch", "score", "--model", f"{MODEL}@champion", "--store", str(store),
                  "--out", str(out), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    capacity = load_use_case(use_case=USE_CASE).thresholds.uses["daily_worklist"].capacity
    assert capacity is not None
    assert result["version"] == version and result["use_case"] == USE_CASE
    assert result["census"] == round(capacity.admissions_per_day)
    assert result["listed"] == capacity.worklist_size
    rows = list(csv.DictReader((out / artifacts.WORKLIST_CSV).open()))
    risks = [float(r["risk"]) for r in rows]
    assert risks == sorted(risks, reverse=True) and len(rows) == capacity.worklist_size
    assert all(r["reason_1"] for r in rows)
    page = (out / artifacts.WORKLIST_HTML).read_text()
    assert is_self_contained(page) and rows[0]["encounter_token"] in page
    # the same list again is refused, not overwritten: one clear line
    again = hmlops("batch", "score", "--model", f"{MODEL}@champion", "--store", str(store),
                   "--out", str(out))  # fmt: skip
    assert again.returncode == 2 and "is never overwritten" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1
    # a store with no snapshot of the model's feature set: one clear line naming what is there
    other = hmlops("batch", "score", "--model", f"{MODEL}@champion", "--store", str(tmp_path),
                   "--out", str(tmp_path / "x"))  # fmt: skip
    assert other.returncode == 2 and "no published snapshot" in other.stderr


def test_the_batch_pipeline_writes_the_same_list(post_acute_champion, tmp_path) -> None:
    store, version = post_acute_champion
    direct = tmp_path / "direct"
    assert hmlops("batch", "score", "--model", f"{MODEL}@{version}", "--store", str(store),
                  "--out", str(direct)).returncode == 0  # fmt: skip
    proc = hmlops("batch", "pipeline", "run", "--model", f"{MODEL}@{version}", "--store",
                  str(store), "--out", str(tmp_path / "kfp"), "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    listed = Path(result["out"]) / artifacts.WORKLIST_CSV
    # the same census, model and capacity: the same list (kfp.local ran the component)
    assert listed.read_text() == (direct / artifacts.WORKLIST_CSV).read_text()
    assert "batch" in result["out"] and result["run_id"]


def _the_admission_card_comes_from_this_predictor(port: int, version: int) -> None:
    """The CDS service's encounter-start hook, bound to the running post-acute predictor."""
    from fastapi.testclient import TestClient

    from hospital_mlops.cli.cds import example_request
    from hospital_mlops.data.normalize import HmacKey, HmacKeyring
    from hospital_mlops.ehr.cds_config import load_cds_config
    from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
    from hospital_mlops.inference.fallback import load_fallback_policy
    from hospital_mlops.inference.prediction_log import PredictionLog
    from serving.cds_service import CdsService, bind_use_case, create_app
    from serving.predictor_client import PredictorClient

    policy = load_fallback_policy()
    service = CdsService(
        config=load_cds_config(),
        mapping=load_fhir_mapping(),
        fallback=policy,
        predictor=PredictorClient("127.0.0.1:9", "readmission", 1.0),  # not used here
        prediction_log=PredictionLog(),
        keyring=HmacKeyring(HmacKey(b"t" * 40, False)),
        clients=None,
        bindings={USE_CASE: bind_use_case(USE_CASE, f"http://127.0.0.1:{port}", 10.0)},
    )
    with TestClient(create_app(service)) as client:
        listed = client.get("/cds-services").json()["services"]
        (admission,) = [s for s in listed if s["hook"] == "encounter-start"]
        body = example_request(hook="encounter-start")
        answer = client.post(f"/cds-services/{admission['id']}", json=body)
        assert answer.status_code == 200, answer.text
        (card,) = answer.json()["cards"]
        assert card["summary"].startswith("Post-acute care need ")
        assert f"_Model {MODEL}/{version};" in card["detail"]
        assert ("suggestions" in card) is (card["indicator"] == "critical")
        # the discharge hook is not this service's: a 400 naming the hook
        wrong = client.post(f"/cds-services/{admission['id']}", json=example_request())
        assert wrong.status_code == 400 and "encounter-start" in wrong.text


def test_its_rollout_and_monitoring_are_its_own(post_acute_champion, tmp_path) -> None:
    """Rollout is per model: a post-acute version's canary is rendered into its own objects
    (never readmission's), and it is monitored under its use case's policy (its outcome is
    known at discharge: a 14-day horizon, not 30)."""
    import subprocess

    import yaml

    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.monitoring.run import registered_use_case
    from hospital_mlops.rollout import gitops

    version = post_acute_champion[1]
    assert registered_use_case(MODEL, "champion") == USE_CASE
    policy = load_monitoring_policy().for_use_case(registered_use_case(MODEL, str(version)))
    assert policy.windows.outcome_horizon_days == load_use_case(use_case=USE_CASE).label.window_days

    canary = gitops.change_for(gitops.Target("canary", version, None, 10), "silent")
    written = gitops.write_change(tmp_path, MODEL, canary, apply=False, allow_unpinned_image=True)
    assert written.patch_path == str(tmp_path / MODEL / "serving" / "kustomization.yaml")
    built = subprocess.run(["kubectl", "kustomize", str(tmp_path / MODEL / "serving")],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    docs = [d for d in yaml.safe_load_all(built) if d]
    [isvc] = [d for d in docs if d["kind"] == "InferenceService"]
    assert isvc["metadata"]["name"] == "post-acute"
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert f"{MODEL}@{version}" in isvc["spec"]["predictor"]["containers"][0]["args"]
    assert not [d for d in docs if d["metadata"]["name"].startswith("readmission")]
