"""CDS Hooks 2.0.1 conformance of the service, against a real predictor: the specification's
own examples (tests/fixtures/cds-hooks, vendored with their source) and each statement that
concerns a service. docs/ehr-integration.md's conformance table names the test for each."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from hospital_mlops.cli.cds import example_request
from hospital_mlops.ehr.cds_card import risk_card
from hospital_mlops.ehr.cds_feedback import EHR_OWN_REASON, record_cds_feedback
from hospital_mlops.ehr.cds_request import CdsRequestError, check_call
from hospital_mlops.ehr.fhir_admission_inputs import admission_model_inputs
from hospital_mlops.ehr.fhir_client import fetch_missing
from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
from hospital_mlops.ehr.fhir_record import gather
from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.feedback import feedback_history, feedback_table, responses
from serving.cds_service import create_app
from tests.unit.test_cds_service import (
    CONFIG,
    DISCHARGE,
    EHR,
    EHR_KEY,
    Cds,
    _auth,
    _call,
    _card,
    _feedback,
    _logged,
    _service,
    running_cds,
)

EXAMPLES = json.loads(
    (Path(__file__).parents[1] / "fixtures/cds-hooks/spec-2.0-examples.json").read_text()
)
ADMISSION_SERVICE = next(s for s in CONFIG.services if s.hook == "encounter-start")
POST_ACUTE = ServedModel("post-acute-at-admission", 1, "a" * 64, "fs", "b" * 64, "diabetes130")
MODEL = "test-cds-conformance-model"  # its own name: the other module's versions are not its


@pytest.fixture(scope="module")
def cds(catalog, d130_small, tmp_path_factory, module_new_store_url) -> Iterator[Cds]:
    work = tmp_path_factory.mktemp("cds-conformance")
    url = module_new_store_url("predictions")
    yield from running_cds(catalog, d130_small, work, url, MODEL)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _no_null_or_empty(value: Any, where: str = "") -> list[str]:
    """Where the spec's "JSON elements SHALL NOT be null … or empty" is broken."""
    if value is None or value in ("", [], {}):
        return [where or "body"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _no_null_or_empty(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for n, v in enumerate(value) for p in _no_null_or_empty(v, f"{where}[{n}]")]
    return []


def _with(example: str, **changes: Any) -> dict[str, Any]:
    """A copy of one of the spec's feedback examples, its one item changed (the card uuid and
    time are the spec's own; they must name a card of ours and a time after it)."""
    body = copy.deepcopy(EXAMPLES[example])
    body["feedback"][0].update(changes)
    return body


def _alerting_card(cds: Cds) -> dict[str, Any]:
    """A readmission risk card at the alert threshold (the ones the workflow numbers read)."""
    for seed in range(1, 80):
        card = _card(_call(cds, example_request("complete", seed=seed)))
        if _logged(cds, card["uuid"])["answer"]["alert"] is True:
            return card
    raise AssertionError("no example encounter reaches the alert threshold")


def _risk_card(cds: Cds) -> dict[str, Any]:
    card = _card(_call(cds, example_request("complete")))
    _logged(cds, card["uuid"])
    return card


def _not_scored_card(cds: Cds) -> dict[str, Any]:
    request = example_request("complete")
    for entry in request["prefetch"]["bundle"]["entry"]:
        if entry["resource"]["id"] == "example-encounter":
            period = entry["resource"]["period"]
            end = datetime.fromisoformat(period["end"].replace("Z", "+00:00"))
            period["start"] = (end - timedelta(days=40)).isoformat()  # beyond what it knows
    card = _card(_call(cds, request))
    assert "not available" in card["summary"]
    return card


def _fallback_card(cds: Cds) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"
    with TestClient(create_app(_service(dead, cds.log, cds.model))) as client:
        answer = client.post(DISCHARGE, json=example_request("complete"), headers=_auth())
    card = _card(answer)
    assert "unavailable" in card["summary"]
    return card


# --- Discovery ---------------------------------------------------------------------------


def test_discovery_is_the_specs_shape_with_valid_prefetch_templates(cds) -> None:
    answer = cds.client.get("/cds-services")
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == set(EXAMPLES["discovery"]) == {"services"}
    assert _no_null_or_empty(body) == []
    allowed = set(EXAMPLES["encounter_discharge_context"])  # both hooks' context fields
    for service in body["services"]:
        assert {"hook", "description", "id"} <= set(service), service
        assert set(service) <= {"hook", "title", "description", "id", "prefetch",
                                "usageRequirements", "extension"}  # fmt: skip
        for template in service.get("prefetch", {}).values():
            tokens = {t.split("}}")[0] for t in template.split("{{")[1:]}
            assert {t.removeprefix("context.") for t in tokens} <= allowed, template
            assert all(t.startswith("context.") for t in tokens), template


# --- Calling a service -------------------------------------------------------------------


def test_the_specs_example_call_on_another_hook_is_a_4xx_naming_the_hook(cds) -> None:
    answer = cds.client.post(DISCHARGE, json=EXAMPLES["request"], headers=_auth())
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["field"] == "hook"


def test_the_specs_example_call_on_our_hooks_without_data_is_412(cds, caplog) -> None:
    """The example's request with our hook and the hook page's context: no prefetch we asked
    for and a FHIR server that cannot be reached is the spec's 412; its token is never
    logged."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    body = {**copy.deepcopy(EXAMPLES["request"]), "hook": "encounter-discharge"}
    body |= {"fhirServer": closed, "context": EXAMPLES["encounter_discharge_context"]}
    with caplog.at_level("DEBUG"):
        answer = cds.client.post(DISCHARGE, json=body, headers=_auth())
    assert answer.status_code == 412, answer.text
    assert answer.json()["errors"][0]["field"].startswith("prefetch.")
    # the admission hook's service, as it checks and completes the same call
    body |= {"hook": "encounter-start", "context": EXAMPLES["encounter_start_context"]}
    request = check_call(copy.deepcopy(body), ADMISSION_SERVICE)
    with pytest.raises(CdsRequestError) as refused, caplog.at_level("DEBUG"):
        asyncio.run(fetch_missing(request, ADMISSION_SERVICE, 2.0))
    assert refused.value.status == 412
    assert "some-opaque-fhir-access-token" not in caplog.text


def test_an_extension_in_a_call_is_ignored_not_refused(cds) -> None:
    """The spec reserves ``extension`` for implementers: the example's own, on our call."""
    request = example_request("complete")
    request["extension"] = {
        "com.example.timestamp": "2017-11-27T22:13:25Z",
        "com.cds-hooks.sandbox.myextension-practitionerspecialty": "gastroenterology",
    }
    card = _card(_call(cds, request))
    assert "readmission risk" in card["summary"]


def test_a_prefetch_key_holding_an_operation_outcome_is_fetched_again(cds) -> None:
    """The client SHOULD send its fetch error as an OperationOutcome; the service SHOULD check
    for one. With no server to ask, a required key in error is a 412 naming it."""
    request = example_request("complete")
    bundle = request["prefetch"].pop("bundle")
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "example-patient"
    )
    request["prefetch"]["patient"] = patient
    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "timeout"}]}  # fmt: skip
    request["prefetch"]["encounter"] = outcome
    answer = _call(cds, request)
    assert answer.status_code == 412, answer.text
    assert "encounter" in answer.text


def test_every_card_kind_is_the_specs_card(cds) -> None:
    """Summary under 140 characters, a known indicator, a source label, a uuid (without one
    there is no feedback), selectionBehavior with suggestions, a display on every override
    reason, and no null or empty element."""
    cards = [_alerting_card(cds), _not_scored_card(cds), _fallback_card(cds)]
    cards.append(_card(_call(cds, example_request("sparse"))))
    settings = CONFIG.card_settings(ADMISSION_SERVICE)  # the one card kind with a suggestion
    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), datetime.now(UTC)
    )
    answer = {"prediction_id": str(uuid.uuid4()), "risk": 0.62, "band": "high", "alert": True,
              "reasons": [], "limitations": []}  # fmt: skip
    cards.append(risk_card(answer, inputs, settings, None, datetime.now(UTC)))
    assert "suggestions" in cards[-1]
    for card in cards:
        assert _no_null_or_empty(card) == [], card
        assert len(card["summary"]) < 140
        assert not re.search(r"<[A-Za-z/!]", card.get("detail", "")), card  # Markdown, no HTML
        assert card["indicator"] in ("info", "warning", "critical")
        assert card["source"]["label"]
        uuid.UUID(card["uuid"])
        if "suggestions" in card:
            assert card["selectionBehavior"] in ("at-most-one", "any")
            for suggestion in card["suggestions"]:
                assert suggestion["label"] and uuid.UUID(suggestion["uuid"])
                for action in suggestion["actions"]:
                    assert action["type"] in ("create", "update", "delete")
                    assert action["description"]
                    assert action["type"] != "create" or action["resource"]["resourceType"]
        for reason in card.get("overrideReasons", []):
            assert {"code", "system", "display"} <= set(reason)
        for link in card.get("links", []):
            assert link["label"] and link["url"] and link["type"] in ("absolute", "smart")
            assert link["type"] == "smart" or "appContext" not in link
    assert _no_null_or_empty(EXAMPLES["response"]) == []  # the check holds the spec's example


# --- Feedback ----------------------------------------------------------------------------


def test_the_specs_accepted_example_on_an_admission_card_records_acted_on(store_url) -> None:
    """The admission card at its threshold suggests a consult: accepting it is acted on. (Its
    prediction is logged here as its predictor logs one; the containers' e2e serves it.)"""
    log = PredictionLog(store_url)
    settings = CONFIG.card_settings(ADMISSION_SERVICE)
    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), datetime.now(UTC)
    )
    answer = {"prediction_id": str(uuid.uuid4()), "scored_at": _now(), "risk": 0.62,
              "band": "high", "alert": True, "reasons": [], "limitations": []}  # fmt: skip
    log.write(records("hook", "v1", POST_ACUTE, [inputs.instance], [answer]))
    card = risk_card(answer, inputs, settings, None, datetime.now(UTC))
    (suggestion,) = card["suggestions"]
    feedback = _with("feedback_accepted", card=card["uuid"], outcomeTimestamp=_now())

    def record(body: Any) -> dict[str, Any]:
        return record_cds_feedback(
            log, ADMISSION_SERVICE, CONFIG.override_reasons, CONFIG.override_reasons_system,
            body, suggests=settings.text.suggestion is not None,
        )  # fmt: skip

    # the spec's own suggestion id is not this card's: refused by name, nothing written
    with pytest.raises(CdsRequestError) as refused:
        record(feedback)
    assert refused.value.problems[0][0] == "feedback[0].acceptedSuggestions[0].id"
    assert feedback_history(log, card["uuid"]) == []
    feedback["feedback"][0]["acceptedSuggestions"][0]["id"] = suggestion["uuid"]
    assert record(feedback) == {"recorded": 1, "replayed": 0}
    (stored,) = feedback_history(log, card["uuid"])
    assert stored["response"] == "acted_on" and stored["card_kind"] == "risk"


def test_the_specs_accepted_example_on_a_card_without_suggestions(cds) -> None:
    """A readmission card offers no order: the example's suggestion is refused by name; an
    accepted card without one (tolerated, the spec asks for one) is acknowledged."""
    card = _card(_call(cds, example_request("complete")))
    _logged(cds, card["uuid"])
    assert "suggestions" not in card
    body = _with("feedback_accepted", card=card["uuid"], outcomeTimestamp=_now())
    refused = _feedback(cds.client, body)
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["field"] == "feedback[0].acceptedSuggestions[0].id"
    del body["feedback"][0]["acceptedSuggestions"]
    assert _feedback(cds.client, body).json() == {"recorded": 1, "replayed": 0}
    assert feedback_history(cds.log, card["uuid"])[0]["response"] == "acknowledged"


@pytest.mark.parametrize("kind", ["risk", "not_scored", "fallback"])
def test_the_specs_override_examples_are_accepted_on_every_card_issued(cds, kind) -> None:
    card = {"risk": _risk_card, "not_scored": _not_scored_card,
            "fallback": _fallback_card}[kind](cds)  # fmt: skip
    plain = _with("feedback_overridden", card=card["uuid"], outcomeTimestamp=_now())
    answer = _feedback(cds.client, plain)
    assert answer.status_code == 200, answer.text
    # the spec's reason is the EHR's own (not one the card offered): recorded as that
    later = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    reasoned = _with("feedback_overridden_with_reason", card=card["uuid"], outcomeTimestamp=later)
    answer = _feedback(cds.client, reasoned)
    assert answer.status_code == 200 and answer.json() == {"recorded": 1, "replayed": 0}
    first, second = feedback_history(cds.log, card["uuid"])
    assert (first["response"], first["override_reason"]) == ("overridden", None)
    assert second["override_reason"] == EHR_OWN_REASON and second["assessment"] == 2
    assert {first["card_kind"], second["card_kind"]} == {kind}
    assert "clinician" not in json.dumps([first, second])  # the userComment is never kept


def test_a_card_of_our_reasons_records_its_display(cds) -> None:
    card = _risk_card(cds)
    code, display = next(iter(CONFIG.override_reasons.items()))
    body = _with("feedback_overridden_with_reason", card=card["uuid"], outcomeTimestamp=_now())
    body["feedback"][0]["overrideReason"]["reason"] = {
        "code": code, "system": CONFIG.override_reasons_system}  # fmt: skip
    assert _feedback(cds.client, body).status_code == 200
    assert feedback_history(cds.log, card["uuid"])[-1]["override_reason"] == display


def test_repeated_feedback_is_a_later_assessment_and_the_latest_counts(cds) -> None:
    """The spec: a service "may receive feedback for the same card instance multiple times"."""
    card = _alerting_card(cds)
    first = _with("feedback_overridden", card=card["uuid"], outcomeTimestamp=_now())
    for _ in range(2):  # the same feedback again (a retry) is acknowledged, not counted twice
        assert _feedback(cds.client, first).status_code == 200
    assert len(feedback_history(cds.log, card["uuid"])) == 1
    then = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    accepted = _with("feedback_accepted", card=card["uuid"], outcomeTimestamp=then)
    del accepted["feedback"][0]["acceptedSuggestions"]
    assert _feedback(cds.client, accepted).json() == {"recorded": 1, "replayed": 0}
    frame = responses(cds.log, MODEL, 1).set_index("prediction_id")
    row = frame.loc[card["uuid"]]
    assert row["response"] == "acknowledged" and row["assessments"] == 2


def test_feedback_on_cards_without_a_prediction_stays_out_of_the_workflow_numbers(cds) -> None:
    card = _not_scored_card(cds)
    body = _with("feedback_overridden", card=card["uuid"], outcomeTimestamp=_now())
    assert _feedback(cds.client, body).status_code == 200
    (kept,) = feedback_history(cds.log, card["uuid"])
    assert kept["card_kind"] == "not_scored" and kept["response"] == "overridden"
    frame = responses(cds.log, MODEL, 1)
    assert card["uuid"] not in set(frame["prediction_id"])


def test_a_store_failing_while_recording_is_a_503_and_a_retry_is_safe(tmp_path) -> None:
    from hospital_mlops.ehr.issued_cards import remember_card

    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    card = str(uuid.uuid4())
    remember_card(log, card, "fallback", service_id="s", model_name="m",
                  issued_at=datetime.now(UTC))  # fmt: skip
    body = _with("feedback_overridden", card=card, outcomeTimestamp=_now())
    reasons, system = CONFIG.override_reasons, CONFIG.override_reasons_system
    service = CONFIG.services[0]
    log.engine.dispose()
    read_only = sa.event.listens_for(log.engine, "connect")(
        lambda dbapi, _: dbapi.execute("PRAGMA query_only = ON")
    )
    with pytest.raises(CdsRequestError) as failed:
        record_cds_feedback(log, service, reasons, system, body)
    assert failed.value.status == 503 and failed.value.problems[0][0] == "store"
    sa.event.remove(log.engine, "connect", read_only)
    log.engine.dispose()
    assert record_cds_feedback(log, service, reasons, system, body)["recorded"] == 1


def test_one_bad_item_refuses_the_list_and_writes_nothing(cds) -> None:
    good, other = _risk_card(cds), _not_scored_card(cds)
    body = {"feedback": [
        {"card": good["uuid"], "outcome": "overridden", "outcomeTimestamp": _now()},
        {"card": other["uuid"], "outcome": "ignored", "outcomeTimestamp": _now()},
        {"card": str(uuid.uuid4()), "outcome": "overridden", "outcomeTimestamp": _now()},
    ]}  # fmt: skip
    table = feedback_table(cds.log)
    with cds.log.engine.connect() as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(table)).scalar()
    answer = _feedback(cds.client, body)
    assert answer.status_code == 400
    fields = {e["field"] for e in answer.json()["errors"]}
    assert fields == {"feedback[1].outcome", "feedback[2].card"}
    with cds.log.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(table)).scalar() == before


@pytest.mark.parametrize("body", [{}, {"feedback": {}}, {"feedback": []}, [], "feedback"])
def test_feedback_that_is_not_an_object_holding_a_list_is_400(cds, body) -> None:
    """The spec: the request to the feedback endpoint SHALL be an object containing an array."""
    answer = _feedback(cds.client, body)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "feedback"


def test_feedback_for_several_cards_at_once_is_recorded(cds) -> None:
    cards = [_risk_card(cds), _not_scored_card(cds), _fallback_card(cds)]
    body = {"feedback": [
        {"card": c["uuid"], "outcome": "overridden", "outcomeTimestamp": _now()} for c in cards
    ]}  # fmt: skip
    answer = _feedback(cds.client, body)
    assert answer.status_code == 200 and answer.json()["recorded"] == 3


# --- Trusting CDS clients ----------------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "HS384"])
def test_a_jwt_unsigned_or_signed_with_a_shared_secret_is_401(cds, alg) -> None:
    """The spec: JWTs SHALL NOT be signed using the none algorithm, nor any symmetric one."""
    now = datetime.now(UTC).timestamp()
    claims = {"iss": EHR, "aud": f"http://testserver{DISCHARGE}", "iat": now, "exp": now + 60,
              "jti": str(uuid.uuid4())}  # fmt: skip
    key = None if alg == "none" else "a-shared-secret-of-enough-length-for-hs384-0123456789"
    token = jwt.encode(claims, key, algorithm=alg, headers={"kid": "ehr-1"})
    for path in (DISCHARGE, f"{DISCHARGE}/feedback"):
        answer = cds.client.post(
            path, json=example_request("complete"), headers={"Authorization": f"Bearer {token}"}
        )
        assert answer.status_code == 401, answer.text


def test_a_jwt_without_sub_is_accepted_as_2_0_defines_none(cds) -> None:
    now = time.time()
    claims = {"iss": EHR, "aud": f"http://testserver{DISCHARGE}", "iat": now, "exp": now + 60,
              "jti": str(uuid.uuid4())}  # fmt: skip
    token = jwt.encode(claims, EHR_KEY, algorithm="ES384", headers={"kid": "ehr-1"})
    headers = {"Authorization": f"Bearer {token}"}
    answer = cds.client.post(DISCHARGE, json=example_request("complete"), headers=headers)
    assert answer.status_code == 200, answer.text


def test_the_docs_conformance_table_names_tests_that_exist() -> None:
    """Each test the table in docs/ehr-integration.md names is a test of that file (a name
    ending in … is a prefix)."""
    root = Path(__file__).parents[2]
    text = (root / "docs/ehr-integration.md").read_text()
    table = text[text.index("## Conformance with CDS Hooks") : text.index("## Performance")]
    files = {"conf": "tests/unit/test_cds_hooks_conformance.py",
             "svc": "tests/unit/test_cds_service.py", "auth": "tests/unit/test_cds_auth.py",
             "adm": "tests/unit/test_cds_admission.py"}  # fmt: skip
    named = re.findall(r"`(?:(\w+)::|(tests/[\w/]+\.py)::)(test_\w+)(…?)`", table)
    assert len(named) > 40, named
    for short, path, name, prefix in named:
        source = (root / (files[short] if short else path)).read_text()
        pattern = f"def {name}" + ("" if prefix else r"\(")
        assert re.search(pattern, source), f"{short or path}::{name}"
