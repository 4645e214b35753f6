"""The explainer as real KServe model servers on 127.0.0.1: a predictor serving a model trained
on real encounters and registered in this session's registry, and the explainer calling it over
HTTP as KServe wires it. Both views, error pass-through, and a predictor that is not there yet."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from hospital_mlops.features import feature_set_for
from hospital_mlops.governance import registration
from hospital_mlops.governance.config import load_governance
from hospital_mlops.model.evaluate.evaluation import LABEL, SCORE
from hospital_mlops.model.explain import JARGON, MEDICATION_GROUP
from hospital_mlops.use_case import load_use_case
from tests.unit.test_explain import Real, real_data, real_model

MODEL = "test-explainer-model"
ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0

EXPLAINER = """
import sys
from pathlib import Path
from hospital_mlops.inference.config import load_serving_config
from serving.explainer import serve_explainer

config = load_serving_config()
# Small KernelSHAP settings keep the test fast; the benchmark runs the configured ones.
small = config.explainer.model_copy(update={"nsamples": 32, "background_rows": 8})
serve_explainer(sys.argv[1], int(sys.argv[2]), extract=Path(sys.argv[3]),
                config=config.model_copy(update={"explainer": small}))
"""
PREDICTOR = """
import sys
from serving.server import serve_predictor
serve_predictor(sys.argv[1], "champion", int(sys.argv[2]))
"""
PERMISSIVE = """
import asyncio, json, sys
from hospital_mlops.inference.config import load_serving_config
from serving.explainer import RiskExplainer

explainer = RiskExplainer("readmission", sys.argv[1], load_serving_config())
assert explainer.load()
body = {"instances": json.loads(sys.argv[2]), "view": "technical"}
out = asyncio.run(explainer.explain(body))
print(json.dumps({"alibi_imported": any(m.startswith("alibi") for m in sys.modules), "out": out}))
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(script: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=os.environ.copy(),
    )


def _wait_ready(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    from serving.readiness import NotReady, wait_until_ready

    url = f"http://127.0.0.1:{port}/v1/models/readmission"
    try:
        wait_until_ready(url, process, log, timeout=START_TIMEOUT, interval=0.2)
    except NotReady as exc:
        pytest.fail(f"{exc}:\n{log.read_text()[-3000:]}")


def _register(real: Real, work: Path, model_name: str = MODEL) -> None:
    """A servable version, registered, signed off and promoted as the pipeline would, with its
    test-period predictions as evidence (the CDS card's calibration reads them)."""
    fs = feature_set_for("diabetes130")
    model = real_model(real)
    model_dir = work / "risk_model"
    digest = model.save(model_dir)
    names = [f.name for f in fs.features]
    golden = real.split.test[names].head(200).reset_index(drop=True)
    golden["expected_risk"] = model.predict_risk(golden, fs)
    training = work / "training.json"
    primary = load_use_case().thresholds.primary
    training.write_text(json.dumps({"thresholds": {primary: 0.15}, "split": real.split.summary}))
    test_predictions = work / "test_predictions.parquet"
    pd.DataFrame(
        {SCORE: model.predict_risk(real.split.test, fs), LABEL: real.split.test[fs.label]}
    ).to_parquet(test_predictions, index=False)
    version = registration.log_candidate(
        model_name,
        registration.Candidate(
            model_dir=model_dir,
            evidence={"training.json": training, "test_predictions.parquet": test_predictions},
            params={"source": "diabetes130"},
            metrics={},
            tags={"lineage.model_sha256": digest, "feature_set_version": fs.version},
            gates_passed=True,
            input_example=golden[names].head(3),
            golden=golden,
        ),
    )["version"]
    roles = list(load_governance().required_signoffs)
    for role in roles:
        registration.sign_off(model_name, version, role, "Test reviewer")
    registration.promote(model_name, version, "champion", roles)


@dataclass
class Stack:
    explainer: str
    predictor: str
    predictor_host: str
    instances: list[dict[str, Any]]
    before_predictor: httpx.Response  # an explanation asked while the predictor was not up
    ready_before_predictor: bool
    permissive: subprocess.Popen[str]  # the permissive profile, run while the tests run


@pytest.fixture(scope="module")
def stack(catalog, d130_small, tmp_path_factory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("explainer-stack")
    explainer_port, predictor_port = _free_port(), _free_port()
    predictor_host = f"127.0.0.1:{predictor_port}"
    explainer_log, predictor_log = work / "explainer.log", work / "predictor.log"
    processes: list[subprocess.Popen[Any]] = [
        _start(EXPLAINER, [predictor_host, str(explainer_port), str(d130_small)], explainer_log)
    ]
    try:
        real = real_data(catalog, d130_small)  # while the explainer builds its background
        _register(real, work)
        _wait_ready(explainer_port, processes[0], explainer_log)
        explainer = f"http://127.0.0.1:{explainer_port}/v1/models/readmission:explain"
        before = httpx.post(explainer, json={"instances": real.test_instances[:1]}, timeout=10)
        ready = httpx.get(f"http://127.0.0.1:{explainer_port}/v2/health/ready").is_success
        processes.append(_start(PREDICTOR, [MODEL, str(predictor_port)], predictor_log))
        _wait_ready(predictor_port, processes[1], predictor_log)
        instances = real.test_instances[:: max(1, len(real.test_instances) // 20)][:20]
        permissive = subprocess.Popen(
            [sys.executable, "-c", PERMISSIVE, predictor_host, json.dumps(instances[:2])],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "HMLOPS_LICENCE_PROFILE": "permissive"},
        )
        processes.append(permissive)
        yield Stack(
            explainer=explainer,
            predictor=f"http://{predictor_host}/v1/models/readmission:predict",
            predictor_host=predictor_host,
            instances=instances,
            before_predictor=before,
            ready_before_predictor=ready,
            permissive=permissive,
        )
    finally:
        for process in processes:  # test servers: no graceful drain needed
            process.kill()
            process.wait(timeout=10)


def test_the_explainer_is_ready_without_the_predictor_and_answers_503_until_it_is(
    stack,
) -> None:
    assert stack.ready_before_predictor
    response = stack.before_predictor
    assert response.status_code == 503
    error = response.json()["error"]
    assert stack.predictor_host in error and "not reachable" in error
    assert "Traceback" not in response.text


def test_the_clinician_view_explains_the_predictors_own_answer(stack) -> None:
    instances = stack.instances[:5]
    predicted = httpx.post(stack.predictor, json={"instances": instances}, timeout=30).json()
    response = httpx.post(stack.explainer, json={"instances": instances}, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["view"] == "clinician" and len(body["explanations"]) == 5
    for explanation, answer in zip(body["explanations"], predicted["predictions"], strict=True):
        assert explanation["risk"] == answer["risk"]
        assert explanation["model_version"] == f"{MODEL}/1"
        assert [r["feature"] for r in explanation["reasons"]] == [
            r["feature"] for r in answer["reasons"]
        ]
        for reason in explanation["reasons"]:
            assert not any(word in reason["text"].lower() for word in JARGON)


def test_the_technical_view_attributes_the_risk_to_the_raw_inputs(stack) -> None:
    body = {"instances": stack.instances[5:6], "view": "technical"}
    response = httpx.post(stack.explainer, json=body, timeout=60)
    assert response.status_code == 200, response.text
    (explanation,) = response.json()["explanations"]
    kernel = explanation["kernel_shap"]
    total = kernel["base_value"] + sum(a["attribution"] for a in kernel["attributions"])
    assert total == pytest.approx(explanation["risk"], abs=1e-6)
    assert kernel["nsamples"] == 32 and kernel["background"]["rows"] == 8
    assert MEDICATION_GROUP in {a["input"] for a in kernel["attributions"]}
    assert explanation["tree_shap"]["contributions"]
    assert explanation["model_version"] == f"{MODEL}/1"


def test_the_permissive_profile_uses_exact_treeshap_and_never_imports_alibi(stack) -> None:
    stdout, stderr = stack.permissive.communicate(timeout=60)
    assert stack.permissive.returncode == 0, stderr[-3000:]
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["alibi_imported"] is False
    out = result["out"]
    assert out["licence_profile"] == "permissive" and len(out["explanations"]) == 2
    for explanation in out["explanations"]:
        assert "kernel_shap" not in explanation and explanation["tree_shap"]["contributions"]


def test_predictor_field_errors_come_back_unchanged(stack) -> None:
    bad = [stack.instances[0], dict(stack.instances[1], time_in_hospital=99)]
    direct = httpx.post(stack.predictor, json={"instances": bad}, timeout=30)
    for view in ("clinician", "technical"):
        response = httpx.post(stack.explainer, json={"instances": bad, "view": view}, timeout=30)
        assert response.status_code == direct.status_code == 400
        assert response.json() == direct.json()
        (problem,) = json.loads(response.json()["error"])["errors"]
        assert problem["instance"] == 1 and problem["field"] == "time_in_hospital"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"instances": [], "view": "poem"}, "view"),
        ({"view": "clinician"}, "instances"),
        ({"instances": [{}] * 11, "view": "technical"}, "instances"),
    ],
)
def test_bad_explain_requests_are_400s_naming_the_field(stack, body, field) -> None:
    response = httpx.post(stack.explainer, json=body, timeout=10)
    assert response.status_code == 400
    (problem,) = json.loads(response.json()["error"])["errors"]
    assert problem["field"] == field
