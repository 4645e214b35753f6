"""Bearer tokens on the real local stack: `hmlops serve` with a tokens file answers only
callers with a token, the explainer reaches its predictor with its own, health probes stay
open, and each prediction reached is in the access audit with who reached it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from hospital_mlops.security.api_access import add_client, read_access_log
from tests.integration.conftest import HMLOPS, free_port_base, hmlops

MODEL = "readmission-30d"


@pytest.fixture(scope="module")
def guarded_stack(d130_champion, tmp_path_factory):
    work = tmp_path_factory.mktemp("access")
    clients = work / "clients.json"
    stack_token = add_client(clients, "local-stack")
    dashboard = add_client(clients, "ward-dashboard")
    env = {
        **os.environ,
        "HMLOPS_API_TOKENS_FILE": str(clients),
        "HMLOPS_API_TOKEN": stack_token,
        "HMLOPS_ACCESS_LOG": str(work / "access.jsonl"),
    }
    proc = hmlops("serve", "--print-example-request")
    body = json.loads(proc.stdout)
    port = free_port_base(3)
    log = (work / "serve.log").open("wb")
    server = subprocess.Popen(
        [*HMLOPS, "serve", "--model", f"{MODEL}@champion", "--port-base", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while "Ctrl-C" not in (work / "serve.log").read_text():
        assert server.poll() is None and time.monotonic() < deadline, (
            work / "serve.log"
        ).read_text()
        time.sleep(0.5)
    yield base, port, body, dashboard, work
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)


def test_no_token_no_answer_and_health_stays_open(guarded_stack) -> None:
    base, port, body, _, _ = guarded_stack
    predict = f"{base}/v1/models/readmission:predict"
    assert httpx.post(predict, json=body, timeout=30).status_code == 401
    bad = httpx.post(predict, json=body, headers={"authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401 and bad.headers["www-authenticate"].startswith("Bearer")
    explain = f"http://127.0.0.1:{port + 1}/v1/models/readmission:explain"
    assert httpx.post(explain, json=body, timeout=30).status_code == 401
    drift = f"http://127.0.0.1:{port + 2}/drift/latest"
    assert httpx.get(drift, timeout=30).status_code == 401
    for p in (port, port + 1, port + 2):
        assert httpx.get(f"http://127.0.0.1:{p}/v2/health/ready", timeout=30).status_code == 200


def test_a_client_with_a_token_is_answered_and_audited(guarded_stack) -> None:
    base, port, body, dashboard, work = guarded_stack
    auth = {"authorization": f"Bearer {dashboard}"}
    answer = httpx.post(f"{base}/v1/models/readmission:predict", json=body, headers=auth,
                        timeout=30)  # fmt: skip
    assert answer.status_code == 200
    prediction_id = answer.json()["predictions"][0]["prediction_id"]
    # the explainer calls the predictor with the stack's own token
    explained = httpx.post(f"http://127.0.0.1:{port + 1}/v1/models/readmission:explain",
                           json=body, headers=auth, timeout=60)  # fmt: skip
    assert explained.status_code == 200, explained.text
    assert httpx.get(f"http://127.0.0.1:{port + 2}/drift/latest", headers=auth).status_code == 200
    records = read_access_log(work / "access.jsonl")
    mine = [r for r in records if prediction_id in r["prediction_ids"]]
    assert [(r["who"], r["service"], r["status"]) for r in mine] == [
        ("ward-dashboard", "predictor", 200)
    ]
    services = {(r["who"], r["service"]) for r in records if r["status"] == 200}
    assert ("ward-dashboard", "explainer") in services
    assert ("local-stack", "predictor") in services  # the explainer's own call, by its token
    refused = [r for r in records if r["status"] == 401]
    assert refused and {r["who"] for r in refused} == {"unauthenticated"}
    text = (work / "access.jsonl").read_text()
    assert dashboard not in text and json.dumps(body["instances"][0])[:40] not in text


def test_a_broken_tokens_file_stops_the_server_with_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "clients.json").write_text('{"clients": {}}')
    env = {**os.environ, "HMLOPS_API_TOKENS_FILE": str(tmp_path / "clients.json")}
    proc = subprocess.run([*HMLOPS, "serve-one", "predictor", "--model", f"{MODEL}@champion",
                           "--port", str(free_port_base(1))],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2 and "non-empty 'clients'" in proc.stderr
    assert "Traceback" not in proc.stderr
