"""The feedback API over HTTP: a response recorded against its prediction; every bad request
answered 4xx by field, and nothing written."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.feedback import feedback_table, responses
from serving.feedback_api import MAX_BODY_BYTES, create_app

SERVED = ServedModel("readmission-30d", 1, "a" * 64, "fs", "b" * 64, "diabetes130")
REASONS = ("already planned", "patient declined")
GOOD = {"prediction_id": "p0", "response": "acted_on", "responded_at": "2026-01-02T11:30:00+01:00"}


@pytest.fixture
def log(store_url: str) -> PredictionLog:
    log = PredictionLog(store_url)
    answers = [
        {"prediction_id": f"p{i}", "scored_at": "2026-01-02T10:00:00Z", "risk": 0.3, "alert": True}
        for i in range(3)
    ]
    log.write(records("r", "v1", SERVED, [{} for _ in answers], answers))
    return log


@pytest.fixture
def client(log: PredictionLog) -> TestClient:
    return TestClient(create_app(log, REASONS))


def _rows(log: PredictionLog) -> int:
    with log.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(feedback_table(log))).scalar()
        )


def test_a_response_is_recorded_read_back_and_joins_its_alert(client, log) -> None:
    answer = client.post("/v1/feedback", json=GOOD)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["prediction_id"] == "p0" and body["responded_at"] == "2026-01-02T10:30:00Z"
    stored = client.get("/v1/feedback/p0").json()
    assert stored["response"] == "acted_on" and stored["source"] == "api"
    override = {**GOOD, "prediction_id": "p1", "response": "overridden"}
    override |= {"override_reason": "patient declined", "source": "ehr-inbasket"}
    assert client.post("/v1/feedback", json=override).status_code == 201
    frame = responses(log, "readmission-30d", 1).set_index("prediction_id")
    assert frame.loc["p1", "override_reason"] == "patient declined"
    assert frame.loc["p0", "response"] == "acted_on" and frame["response"].isna().sum() == 1
    assert client.get("/v1/feedback/p1").json()["source"] == "ehr-inbasket"
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.parametrize(
    ("body", "status", "field", "message"),
    [
        ({**GOOD, "prediction_id": "nope"}, 404, "prediction_id", "no prediction 'nope'"),
        ({**GOOD, "response": "ignored"}, 400, "response", "must be one of"),
        ({**GOOD, "response": "overridden"}, 400, "override_reason", "required"),
        (
            {**GOOD, "response": "overridden", "override_reason": "busy"},
            400,
            "override_reason",
            "configured reasons",
        ),
        ({**GOOD, "responded_at": "2026-01-02T11:30:00"}, 400, "responded_at", "UTC offset"),
        ({**GOOD, "responded_at": "2099-01-01T00:00:00Z"}, 400, "responded_at", "in the future"),
        ({**GOOD, "responded_at": 5}, 400, "responded_at", "must be a string"),
        ({"response": "acted_on", "responded_at": "x"}, 400, "prediction_id", "is required"),
        ({**GOOD, "mrn": "12345"}, 400, "mrn", "not a field"),
        ({**GOOD, "prediction_id": "p" * 37}, 400, "prediction_id", "at most 36"),
        ([GOOD], 400, "body", "JSON object"),
    ],
)
def test_a_bad_response_is_refused_by_field_and_nothing_is_written(
    client, log, body, status, field, message
) -> None:
    answer = client.post("/v1/feedback", json=body)
    assert answer.status_code == status, answer.text
    errors = answer.json()["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors
    assert _rows(log) == 0


def test_every_structural_problem_is_named_at_once(client) -> None:
    answer = client.post("/v1/feedback", json={"response": 3, "extra": 1})
    fields = {e["field"] for e in answer.json()["errors"]}
    assert answer.status_code == 400
    assert fields == {"extra", "prediction_id", "response", "responded_at"}


def test_a_second_answer_is_a_later_assessment_and_a_retry_a_replay(client, log) -> None:
    assert client.post("/v1/feedback", json=GOOD).status_code == 201
    retry = client.post("/v1/feedback", json=GOOD)
    assert retry.status_code == 200 and retry.json()["replayed"] is True
    later = {**GOOD, "response": "acknowledged", "responded_at": "2026-01-02T11:45:00Z"}
    again = client.post("/v1/feedback", json=later)
    assert again.status_code == 201 and again.json()["assessment"] == 2, again.text
    latest = client.get("/v1/feedback/p0").json()
    assert latest["response"] == "acknowledged" and latest["assessments"] == 2
    assert _rows(log) == 2


def test_malformed_oversized_and_non_json_bodies_are_refused(client, log) -> None:
    headers = {"content-type": "application/json"}
    assert client.post("/v1/feedback", content=b"{not json", headers=headers).status_code == 400
    big = json.dumps({**GOOD, "source": "x" * MAX_BODY_BYTES}).encode()
    assert client.post("/v1/feedback", content=big, headers=headers).status_code == 413
    plain = client.post(
        "/v1/feedback", content=b"p0 acted_on", headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 415 and plain.json()["errors"][0]["field"] == "content-type"
    assert client.get("/v1/feedback/p2").status_code == 404
    assert _rows(log) == 0


def test_a_store_that_is_gone_answers_503_not_500(log: PredictionLog, new_store_url) -> None:
    client = TestClient(create_app(log, REASONS), raise_server_exceptions=False)
    log.engine.dispose()
    new_store_url.remove(log.url)
    answer = client.post("/v1/feedback", json=GOOD)
    assert answer.status_code == 503 and answer.json()["errors"][0]["field"] == "store"
    assert client.get("/healthz").status_code == 503
