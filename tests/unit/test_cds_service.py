"""The CDS Hooks service against a real KServe predictor on 127.0.0.1 (a model trained on real
encounters, registered in this session's registry): discovery, cards from complete, sparse and
unmapped Bundles, FHIR fetched with the EHR's token when the prefetch is missing, 412 when it
cannot be, 400s that name the problem, feedback that reaches the workflow numbers, the fallback
card when the predictor is down, and no 5xx under fuzzing."""

from __future__ import annotations

import copy
import http.server
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm

from hospital_mlops.cli.cds import example_request
from hospital_mlops.data.normalize import HmacKey, HmacKeyring
from hospital_mlops.ehr.cds_auth import TrustedClient
from hospital_mlops.ehr.cds_config import CdsConfigError, load_cds_config
from hospital_mlops.ehr.fhir_examples import example_bundle, example_instance
from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
from hospital_mlops.ehr.fhir_readmission_inputs import model_inputs
from hospital_mlops.ehr.fhir_record import gather
from hospital_mlops.features import feature_set_for
from hospital_mlops.inference.fallback import load_fallback_policy
from hospital_mlops.inference.prediction_log import PredictionLog, PredictionNotFound
from hospital_mlops.monitoring.feedback import recorded_feedback, responses
from serving.cds_service import CdsService, create_app
from serving.predictor_client import PredictorClient
from tests.html_checks import is_self_contained
from tests.unit.test_explain import real_data
from tests.unit.test_explainer_server import PREDICTOR, _free_port, _register, _start, _wait_ready

MODEL = "test-cds-model"
CONFIG = load_cds_config()
DISCHARGE = "/cds-services/readmission-risk-discharge"
TOKEN = "secret-ehr-token-0123456789"
EHR = "https://ehr.test.example"
EHR_KEY = ec.generate_private_key(ec.SECP384R1())
CLIENTS = {
    EHR: TrustedClient(
        EHR,
        {"keys": [{**json.loads(ECAlgorithm.to_jwk(EHR_KEY.public_key())), "kid": "ehr-1"}]},
    )
}


@dataclass
class Cds:
    client: TestClient
    predictor: str
    log: PredictionLog
    model: str = MODEL


def _auth(audience: str = f"http://testserver{DISCHARGE}", **claims: Any) -> dict[str, str]:
    """A fresh CDS Hooks client JWT from the test EHR, as the spec has the EHR send per call."""
    now = time.time()
    body = {"iss": EHR, "sub": "test-ehr", "aud": audience, "iat": now, "exp": now + 240,
            "jti": str(uuid.uuid4()), **claims}  # fmt: skip
    token = jwt.encode(body, EHR_KEY, algorithm="ES384", headers={"kid": "ehr-1"})
    return {"Authorization": f"Bearer {token}"}


def _feedback(client: TestClient, body: Any) -> httpx.Response:
    return client.post(f"{DISCHARGE}/feedback", json=body, headers=_auth())


def _service(predictor_host: str, log: PredictionLog, model: str = MODEL) -> CdsService:
    return CdsService(
        config=CONFIG,
        mapping=load_fhir_mapping(),
        fallback=load_fallback_policy(),
        predictor=PredictorClient(predictor_host, "readmission", 5.0),
        prediction_log=log,
        keyring=HmacKeyring(HmacKey(b"t" * 40, False)),
        model=model,
        clients=CLIENTS,
    )


def running_cds(
    catalog: Any, d130_small: Any, work: Path, store_url: str, model: str = MODEL
) -> Iterator[Cds]:
    """The service over a real predictor of ``model`` (registered here: a module of its own
    name keeps its version 1 whatever else ran), both logging to ``store_url``."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HMLOPS_PREDICTION_LOG_URL", store_url)  # the predictor's log is the service's
        _register(real_data(catalog, d130_small), work, model)
        port = _free_port()
        process = _start(PREDICTOR, [model, str(port)], work / "predictor.log")
        try:
            _wait_ready(port, process, work / "predictor.log")
            log = PredictionLog(store_url)
            service = _service(f"127.0.0.1:{port}", log, model)
            with TestClient(create_app(service)) as client:
                url = f"http://127.0.0.1:{port}/v1/models/readmission:predict"
                yield Cds(client, url, log, model)
        finally:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="module")
def cds(catalog, d130_small, tmp_path_factory, module_new_store_url) -> Iterator[Cds]:
    work = tmp_path_factory.mktemp("cds")
    yield from running_cds(catalog, d130_small, work, module_new_store_url("predictions"))


def _call(cds: Cds, body: Any) -> httpx.Response:
    return cds.client.post(DISCHARGE, json=body, headers=_auth())


def _logged(cds: Cds, prediction_id: str) -> dict[str, Any]:
    """The predictor logs through a writer process: a prediction lands within moments."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return cds.log.get(prediction_id)
        except PredictionNotFound:
            assert time.monotonic() < deadline, f"prediction {prediction_id} never logged"
            time.sleep(0.1)


def _card(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    (card,) = response.json()["cards"]
    return card


def test_discovery_declares_both_hooks_with_their_prefetch_templates(cds) -> None:
    services = {s["id"]: s for s in cds.client.get("/cds-services").json()["services"]}
    discharge = services["readmission-risk-discharge"]
    assert discharge["hook"] == "encounter-discharge"
    assert set(discharge) >= {"hook", "title", "description", "id", "prefetch"}
    assert set(discharge["prefetch"]) == {
        "patient", "encounter", "conditions", "observations", "medications", "procedures",
        "priorEncounters",
    }  # fmt: skip
    assert discharge["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    view = services["readmission-risk-patient-view"]
    assert view["hook"] == "patient-view" and "encounterId" not in json.dumps(view["prefetch"])


def test_a_complete_bundle_gets_the_models_card_for_that_encounter(cds) -> None:
    card = _card(_call(cds, example_request("complete")))
    # the card is the prediction: the same risk the predictor gives the encounter's own inputs
    direct = httpx.post(cds.predictor, json={"instances": [example_instance()]}, timeout=30)
    (answer,) = direct.json()["predictions"]
    logged = _logged(cds, card["uuid"])
    assert logged["answer"]["risk"] == answer["risk"]
    assert (
        f"{round(answer['risk'] * 100)}%" in card["summary"] and answer["band"] in card["summary"]
    )
    assert len(card["summary"]) <= 140
    assert card["indicator"] == CONFIG.indicator_by_band[answer["band"]]
    detail = card["detail"]
    for n, reason in enumerate(answer["reasons"][:3], start=1):
        assert f"{n}. {reason['text']}" in detail
    assert "of 100 similar patients in the validation period, about" in detail
    assert re.search(r"\*\*Data used:\*\* from .* UTC; the newest is \d+ minutes old", detail)
    assert "re-score with current data" not in detail  # a discharge happening now is fresh
    assert f"{MODEL}/1" in detail
    assert card["source"]["url"] == CONFIG.source.model_card_url
    reasons = {r["code"]: r["display"] for r in card["overrideReasons"]}
    assert reasons == CONFIG.override_reasons
    assert any(card["uuid"] in link["url"] for link in card["links"])
    # the explanation link is this service's own page for the prediction
    link = next(x["url"] for x in card["links"] if x["label"].startswith("Full explanation"))
    assert link == f"http://testserver/explanations/{card['uuid']}"
    # the EHR's encounter id reached the predictor only as its token
    assert "example-encounter" not in json.dumps(logged)


def test_a_sparse_bundle_is_scored_and_names_what_the_record_lacks(cds) -> None:
    card = _card(_call(cds, example_request("sparse")))
    assert "30-day readmission risk" in card["summary"]
    assert "**Not in the record:** admission_source_id, admission_type_id, race." in card["detail"]


def test_unmapped_codes_are_shown_on_the_card(cds) -> None:
    card = _card(_call(cds, example_request("unmapped")))
    assert "**Codes the model cannot read:**" in card["detail"]
    assert "diag_1 (404684003 in http://snomed.info/sct)" in card["detail"]


def test_a_stay_the_model_does_not_know_gets_a_card_that_says_so(cds) -> None:
    request = example_request("complete")
    for entry in request["prefetch"]["bundle"]["entry"]:
        if entry["resource"]["id"] == "example-encounter":
            period = entry["resource"]["period"]
            end = datetime.fromisoformat(period["end"].replace("Z", "+00:00"))
            period["start"] = (end - timedelta(days=40)).isoformat()
    card = _card(_call(cds, request))
    assert card["summary"] == "30-day readmission risk not available for this stay"
    assert "time_in_hospital: 40 days" in card["detail"]


class _FhirServer(http.server.BaseHTTPRequestHandler):
    """A stand-in EHR FHIR server: reads and searches over the example patient's resources."""

    resources: ClassVar[dict[str, list[dict[str, Any]]]] = {}
    seen_auth: ClassVar[list[str | None]] = []

    def do_GET(self) -> None:
        type(self).seen_auth.append(self.headers.get("Authorization"))
        parsed = urlparse(self.path)
        kind, _, ident = parsed.path.strip("/").partition("/")
        found = self.resources.get(kind, [])
        if ident:
            match = [r for r in found if r["id"] == ident]
            body = match[0] if match else None
        else:
            query = parse_qs(parsed.query)
            encounter = query.get("encounter", [None])[0]
            hits = [
                r
                for r in found
                if not encounter or r.get("encounter") == {"reference": f"Encounter/{encounter}"}
            ]
            body = {
                "resourceType": "Bundle",
                "type": "searchset",
                "entry": [{"resource": r} for r in hits],
            }
        self.send_response(200 if body else 404)
        self.send_header("content-type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(json.dumps(body or {}).encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def fhir_server() -> Iterator[str]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in example_bundle("complete")["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    _FhirServer.resources = by_type
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FhirServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_missing_prefetch_is_fetched_with_the_ehrs_token_which_is_never_logged(
    cds, fhir_server, caplog
) -> None:
    request = example_request("complete")
    expected = _card(_call(cds, request))
    del request["prefetch"]
    request["fhirServer"] = fhir_server
    request["fhirAuthorization"] = {"access_token": TOKEN, "token_type": "Bearer",
                                    "expires_in": 300, "scope": "patient/*.read",
                                    "subject": "cds-service"}  # fmt: skip
    _FhirServer.seen_auth.clear()
    with caplog.at_level(logging.DEBUG):
        fetched = _card(_call(cds, request))
    assert set(_FhirServer.seen_auth) == {f"Bearer {TOKEN}"} and len(_FhirServer.seen_auth) == 7
    assert fetched["summary"] == expected["summary"]
    assert TOKEN not in caplog.text


def test_without_prefetch_or_a_fhir_server_the_answer_is_412(cds) -> None:
    request = example_request("complete")
    del request["prefetch"]
    answer = _call(cds, request)
    assert answer.status_code == 412
    assert "no fhirServer" in answer.json()["errors"][0]["message"]
    request["fhirServer"] = "http://127.0.0.1:9"  # nothing listens
    assert _call(cds, request).status_code == 412


def _edit(change) -> dict[str, Any]:
    request = example_request("complete")
    change({e["resource"]["id"]: e["resource"] for e in request["prefetch"]["bundle"]["entry"]})
    return request


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            _edit(lambda r: r["example-patient"].pop("birthDate")),
            "Patient/example-patient",
            "birthDate",
        ),
        (
            _edit(lambda r: r["example-encounter"].pop("period")),
            "Encounter/example-encounter",
            "period",
        ),
        (_edit(lambda r: r["lab-0"].update(status=7)), "Observation/lab-0", "FHIR R4 validation"),
        (
            _edit(lambda r: r["proc-0"].update(subject={"reference": "Patient/other"})),
            "Procedure/proc-0",
            "not Patient/example-patient",
        ),
        ({**example_request("complete"), "hook": "order-select"}, "hook", "encounter-discharge"),
        # found by the fuzzer: it went on as a request header and the service answered 500
        ({**example_request("complete"), "hookInstance": "\x80"}, "hookInstance", "UUID"),
        (
            {**example_request("complete"), "context": {"patientId": "example-patient"}},
            "context.encounterId",
            "required",
        ),
    ],
)
def test_bad_calls_get_a_400_naming_the_problem(cds, body, field, message) -> None:
    answer = _call(cds, body)
    assert answer.status_code == 400, answer.text
    errors = answer.json()["errors"]
    assert any(e["field"] == field and message in e["message"] for e in errors), errors


def test_a_coding_in_an_unknown_system_gets_a_card_naming_it_not_a_400(cds) -> None:
    """Issue 23: a 400 for the whole call is for malformed requests only."""
    body = _edit(lambda r: r["cond-0"].update(code={"coding": [{"system": "urn:x", "code": "1"}]}))
    answer = _call(cds, body)
    assert answer.status_code == 200, answer.text
    (card,) = answer.json()["cards"]
    assert "diag_1 (1 in urn:x)" in card["detail"]


def test_malformed_json_is_a_400_not_a_crash(cds) -> None:
    headers = {"content-type": "application/json", **_auth()}
    answer = cds.client.post(DISCHARGE, content=b'{"hook": ', headers=headers)
    assert answer.status_code == 400 and answer.json()["errors"][0]["field"] == "body"
    assert cds.client.post("/cds-services/nope", json={}).status_code == 404


def test_feedback_is_recorded_against_the_card_and_reaches_the_workflow_numbers(cds) -> None:
    accepted = _card(_call(cds, example_request("complete", seed=11)))
    overridden = _card(_call(cds, example_request("complete", seed=12)))
    for card in (accepted, overridden):
        _logged(cds, card["uuid"])  # feedback comes after its card is in the log
    code, display = next(iter(CONFIG.override_reasons.items()))
    late = "2099-01-01T00:00:00Z"
    body = {
        "feedback": [{"card": accepted["uuid"], "outcome": "accepted", "outcomeTimestamp": late}]
    }
    future = _feedback(cds.client, body)
    assert future.status_code == 400 and "in the future" in future.text
    assert future.json()["errors"][0]["field"] == "feedback[0].outcomeTimestamp"
    now = datetime.now(UTC).isoformat()
    body = {"feedback": [
        {"card": accepted["uuid"], "outcome": "accepted", "outcomeTimestamp": now},
        {"card": overridden["uuid"], "outcome": "overridden", "outcomeTimestamp": now,
         "overrideReason": {"reason": {"code": code, "system": CONFIG.override_reasons_system},
                            "userComment": "Mr Jones said he would rather not"}},
    ]}  # fmt: skip
    answer = _feedback(cds.client, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"recorded": 2, "replayed": 0}
    assert recorded_feedback(cds.log, accepted["uuid"])["response"] == "acknowledged"
    stored = recorded_feedback(cds.log, overridden["uuid"])
    assert stored["response"] == "overridden" and stored["override_reason"] == display
    assert stored["source"] == "cds-hooks:readmission-risk-discharge"
    assert "Jones" not in json.dumps(stored)  # the free-text comment is never kept
    # the workflow numbers read them: every alerted card's response, by prediction id
    frame = responses(cds.log, MODEL, 1).set_index("prediction_id")
    for card, response in ((accepted, "acknowledged"), (overridden, "overridden")):
        if _logged(cds, card["uuid"])["answer"]["alert"]:
            assert frame.loc[card["uuid"], "response"] == response
        else:
            assert card["uuid"] not in frame.index  # not an alert: not in the alert workflow
    again = _feedback(cds.client, body)  # the client's retry: acknowledged, not counted twice
    assert again.status_code == 200 and again.json() == {"recorded": 0, "replayed": 2}
    assert recorded_feedback(cds.log, accepted["uuid"])["assessments"] == 1


@pytest.mark.parametrize(
    ("item", "status", "message"),
    [
        ({"card": "never-issued", "outcome": "accepted"}, 400, "no card with this uuid"),
        ({"card": "x", "outcome": "maybe"}, 400, "accepted or overridden"),
        (
            {"card": "x", "outcome": "overridden", "overrideReason": {"reason": {"code": "b"}}},
            400,
            "a Coding with system and code",
        ),
        ({"card": "x", "outcome": "overridden", "overrideReason": {}}, 400, "a userComment"),
    ],
)
def test_bad_feedback_is_refused_and_nothing_is_written(cds, item, status, message) -> None:
    body = {"feedback": [{"outcomeTimestamp": "2026-11-28T12:00:00Z", **item}]}
    answer = _feedback(cds.client, body)
    assert answer.status_code == status and message in answer.text, answer.text


def test_a_dead_predictor_gets_the_fallback_card_not_an_error(cds) -> None:
    dead = _service(f"127.0.0.1:{_free_port()}", cds.log)
    with TestClient(create_app(dead)) as client:
        answer = client.post(DISCHARGE, json=example_request("complete"), headers=_auth())
    card = _card(answer)
    policy = load_fallback_policy()
    assert policy.mode == "no_score"  # the shipped default
    assert card["summary"] == "30-day readmission risk unavailable right now"
    assert policy.messages.no_score.split(".")[0] in card["detail"]
    assert card["indicator"] == "info"


def _fuzzed() -> st.SearchStrategy[Any]:
    base = example_request("sparse")
    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=20))
    tree = st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=8,
    )
    keys = st.sampled_from(
        ["hook", "hookInstance", "context", "prefetch", "fhirServer", "fhirAuthorization"]
    )
    return st.one_of(
        tree,
        st.builds(lambda k, v: {**copy.deepcopy(base), k: v}, keys, tree),
        st.builds(lambda v: {**copy.deepcopy(base), "prefetch": {"bundle": v}}, tree),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_fuzzed())
def test_fuzzed_calls_never_get_a_5xx(cds, body) -> None:
    answer = _call(cds, body)
    assert answer.status_code < 500, answer.text
    feedback = _feedback(cds.client, body)
    assert feedback.status_code < 500, feedback.text


def test_the_round_trip_of_the_example_is_exact(cds) -> None:
    """The card test above compares with the predictor on the encounter's own inputs: that
    holds because this example's features survive FHIR exactly."""
    from hospital_mlops.features import diabetes130_feature_row

    request = example_request("complete")
    derived = model_inputs(gather(request["prefetch"], request["context"]), load_fhir_mapping())
    original = example_instance()
    assert diabetes130_feature_row(
        original, original["prior_encounters"]
    ) == diabetes130_feature_row(derived.instance, derived.instance["prior_encounters"])


def test_cors_is_granted_to_configured_origins_only(cds, tmp_path) -> None:
    sandbox = "https://sandbox.cds-hooks.org"
    configured = _service("127.0.0.1:9", cds.log)
    configured.config = CONFIG.model_copy(update={"cors_allowed_origins": (sandbox,)})
    preflight = {"Access-Control-Request-Method": "POST"}
    with TestClient(create_app(configured)) as client:
        allowed = client.options(DISCHARGE, headers={"Origin": sandbox, **preflight})
        other = client.options(DISCHARGE, headers={"Origin": "https://evil.example", **preflight})
    assert allowed.headers.get("access-control-allow-origin") == sandbox
    assert "access-control-allow-origin" not in other.headers
    # the shipped config grants none: server-to-server EHR calls need no CORS
    plain = cds.client.options(DISCHARGE, headers={"Origin": sandbox, **preflight})
    assert "access-control-allow-origin" not in plain.headers
    bad = tmp_path / "cds.yaml"
    text = (Path(__file__).resolve().parents[2] / "config" / "cds.yaml").read_text()
    bad.write_text(text.replace("cors_allowed_origins: []", 'cors_allowed_origins: ["*"]'))
    with pytest.raises(CdsConfigError, match="not an exact origin"):
        load_cds_config(bad)


def test_the_explanation_page_shows_every_contribution_and_opens_offline(cds) -> None:
    card = _card(_call(cds, example_request("complete", seed=21)))
    logged = _logged(cds, card["uuid"])
    before = cds.log.count()
    page = cds.client.get(f"/explanations/{card['uuid']}")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert is_self_contained(html)
    # headed with the use case's own name for its risk, as its card says it
    label = CONFIG.card_settings(CONFIG.services[0]).text.risk_label
    assert f"<h1>{escape(label)}: " in html
    for reason in logged["answer"]["reasons"]:
        assert escape(reason["text"]) in html
    # every model feature's exact contribution, from re-scoring the logged inputs
    assert html.count('<td class="n">') == len(feature_set_for("diabetes130").features)
    assert "encounter_token" not in html and logged["inputs"]["encounter_token"] not in html
    assert cds.log.count() == before  # the re-score is a probe, not a new prediction
    assert cds.client.get("/explanations/not-a-prediction").status_code == 404
    assert cds.client.get("/explanations/%3Cscript%3E").status_code == 404
    dead = _service(f"127.0.0.1:{_free_port()}", cds.log)
    with TestClient(create_app(dead)) as client:
        offline = client.get(f"/explanations/{card['uuid']}")
    assert offline.status_code == 200 and "Not available now" in offline.text


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "Authorization: Bearer <JWT> header is required"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer <JWT> header is required"),
        (_auth(exp=time.time() - 600), "expired"),
        (_auth(audience="https://elsewhere.example/cds-services/x"), "not addressed"),
        (_auth(iss="https://stranger.example"), "not a trusted client"),
    ],
)
def test_calls_without_a_valid_client_jwt_are_401(cds, headers, message) -> None:
    for path in (DISCHARGE, f"{DISCHARGE}/feedback"):
        answer = cds.client.post(path, json=example_request("complete"), headers=headers)
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
        assert message in answer.json()["errors"][0]["message"]


def test_a_replayed_jwt_is_401_and_discovery_needs_none(cds) -> None:
    headers = _auth()
    assert (
        cds.client.post(DISCHARGE, json=example_request("complete"), headers=headers).status_code
        == 200
    )
    again = cds.client.post(DISCHARGE, json=example_request("complete"), headers=headers)
    assert again.status_code == 401 and "already used" in again.text
    assert cds.client.get("/cds-services").status_code == 200  # discovery is public
