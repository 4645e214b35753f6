"""Bearer tokens for the local servers and the access audit: tokens kept only as hashes, every
protected path refused without one, health probes open, and each access to a prediction
recorded (who, when, which prediction) with nothing from the request's body."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from hospital_mlops.cli.main import run_captured
from hospital_mlops.security.api_access import (
    AccessLog,
    ApiTokensError,
    add_client,
    load_tokens,
    prediction_ids,
    read_access_log,
    token_hash,
)
from serving.access import AccessControl

PID = "0f8fad5b-d9cb-469f-a165-70867728950e"
OTHER = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def test_a_client_token_is_shown_once_and_only_its_hash_kept(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    token = add_client(path, "ward-dashboard")
    text = path.read_text()
    assert token not in text and token_hash(token) in text
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = add_client(path, "explainer")
    tokens = load_tokens(path)
    assert tokens.client(f"Bearer {token}") == "ward-dashboard"
    assert tokens.client(f"Bearer {second}") == "explainer"
    assert tokens.client(f"Bearer {token}x") is None
    assert tokens.client(token) is None and tokens.client(None) is None
    with pytest.raises(ApiTokensError, match="already has a client"):
        add_client(path, "explainer")
    with pytest.raises(ApiTokensError, match="lower-case"):
        add_client(path, "Ward Dashboard")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "does not exist"),
        ("{not json", "not readable JSON"),
        ('{"clients": {}}', "non-empty 'clients'"),
        ('{"clients": {"BAD NAME": {"sha256": "' + "a" * 64 + '"}}}', "lower-case"),
        ('{"clients": {"a": {"sha256": "abc"}}}', "64 hex"),
        ('{"clients": {"a": {"sha256": "' + "a" * 64 + '"}, "b": {"sha256": "' + "a" * 64
         + '"}}}', "share a token"),
    ],
)  # fmt: skip
def test_a_bad_tokens_file_is_a_clear_error(tmp_path: Path, content, message) -> None:
    path = tmp_path / "clients.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ApiTokensError, match=message):
        load_tokens(path)


def test_prediction_ids_come_from_the_path_and_the_answer() -> None:
    body = json.dumps({"predictions": [{"prediction_id": PID}, {"prediction_id": OTHER}]})
    assert prediction_ids("/v1/models/readmission:predict", body.encode()) == [PID, OTHER]
    assert prediction_ids(f"/explanations/{PID}", b"<html>") == [PID]
    cards = json.dumps({"cards": [{"uuid": OTHER, "summary": "x"}]}).encode()
    assert prediction_ids("/cds-services/readmission-risk-discharge", cards) == [OTHER]


def _app(tokens_path: Path | None, log: AccessLog, **kwargs) -> TestClient:
    app = FastAPI()

    @app.post("/v1/models/readmission:predict")
    async def predict(request: Request) -> dict:
        await request.json()
        return {"predictions": [{"prediction_id": PID, "risk": 0.2}]}

    @app.get("/v2/health/ready")
    async def ready() -> dict:
        return {"ready": True}

    @app.get("/metrics")
    async def metrics() -> str:
        return "hmlops_x 1"

    @app.get("/v1/feedback/{prediction_id}")
    async def feedback(prediction_id: str, request: Request) -> dict:
        request.state.hmlops_client = "named-by-the-app"
        return {"prediction_id": prediction_id}

    tokens = load_tokens(tokens_path) if tokens_path else None
    app.add_middleware(AccessControl, service="predictor", tokens=tokens, log=log, **kwargs)
    return TestClient(app)


def test_without_a_valid_token_nothing_but_health_answers(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    token = add_client(clients, "ward-dashboard")
    log = AccessLog(tmp_path / "access.jsonl")
    client = _app(clients, log)
    body = {"instances": [{"note": "Mrs Example, MRN 55501234"}]}
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": token}):
        answer = client.post("/v1/models/readmission:predict", json=body, headers=headers)
        assert answer.status_code == 401
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert json.loads(answer.json()["error"])["errors"][0]["field"] == "authorization"
    assert client.get("/metrics").status_code == 401
    assert client.get("/v2/health/ready").status_code == 200  # the kubelet's probe
    auth = {"authorization": f"Bearer {token}"}
    answer = client.post("/v1/models/readmission:predict", json=body, headers=auth)
    assert answer.status_code == 200
    assert client.get("/metrics", headers=auth).status_code == 200

    records = read_access_log(tmp_path / "access.jsonl")
    assert [(r["who"], r["status"]) for r in records] == [
        ("unauthenticated", 401), ("unauthenticated", 401), ("unauthenticated", 401),
        ("unauthenticated", 401), ("ward-dashboard", 200),
    ]  # fmt: skip
    assert records[-1]["prediction_ids"] == [PID] and records[-1]["service"] == "predictor"
    text = (tmp_path / "access.jsonl").read_text()
    assert "Mrs Example" not in text and "55501234" not in text and token not in text


def test_open_endpoints_still_audit_and_an_app_can_name_its_caller(tmp_path: Path) -> None:
    log = AccessLog(tmp_path / "access.jsonl")
    client = _app(None, log)
    assert client.post("/v1/models/readmission:predict", json={"instances": []}).status_code == 200
    assert client.get(f"/v1/feedback/{OTHER}").status_code == 200
    records = read_access_log(tmp_path / "access.jsonl")
    assert [(r["who"], r["prediction_ids"]) for r in records] == [
        ("anonymous", [PID]), ("named-by-the-app", [OTHER]),
    ]  # fmt: skip


def test_only_the_protected_prefixes_need_a_token(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    add_client(clients, "ward-dashboard")
    client = _app(clients, AccessLog(tmp_path / "a.jsonl"), protected_prefixes=("/v1/feedback",))
    assert client.post("/v1/models/readmission:predict", json={"instances": []}).status_code == 200
    assert client.get(f"/v1/feedback/{PID}").status_code == 401


def test_the_cli_adds_a_client_and_answers_who_saw_a_prediction(tmp_path: Path) -> None:
    clients = tmp_path / "clients.json"
    code, out, _ = run_captured(["access", "add-client", "--name", "nurse-app",
                                 "--tokens-file", str(clients)])  # fmt: skip
    token = out.strip().splitlines()[-1]
    assert code == 0 and load_tokens(clients).client(f"Bearer {token}") == "nurse-app"
    log = AccessLog(tmp_path / "access.jsonl")
    log.record(who="nurse-app", service="cds", method="GET", path=f"/explanations/{PID}",
               status=200, ids=[PID])  # fmt: skip
    log.record(who="other", service="predictor", method="POST", path="/v1/models/r:predict",
               status=200, ids=[OTHER])  # fmt: skip
    code, out, _ = run_captured(["access", "audit", "--log", str(tmp_path / "access.jsonl"),
                                 "--prediction-id", PID, "--json"])  # fmt: skip
    assert code == 0 and [e["who"] for e in json.loads(out)] == ["nurse-app"]
    code, _, err = run_captured(["access", "add-client", "--name", "nurse-app",
                                 "--tokens-file", str(clients)])  # fmt: skip
    assert code == 2 and "already has a client" in err
