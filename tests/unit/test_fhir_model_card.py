"""The model card as FHIR R4 (HL7 AI Transparency on FHIR), from a card's own files: valid
against the FHIR R4 JSON schema, stable per card, ``final`` only when signed by every role;
and the CDS card that links it. The registry-backed command is tested in
tests/integration/test_fhir_model_card.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from hospital_mlops import artifacts
from hospital_mlops.ehr.cds_card import AI_ASSERTED, risk_card
from hospital_mlops.ehr.cds_config import load_cds_config
from hospital_mlops.governance.fhir_model_card import (
    RegisteredCard,
    fhir_problems,
    model_card_bundle,
)
from tests.fhir_schema import fhir_problems as schema_problems

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
CARD = {"BasicInfo": {"ModelName": "30-day readmission (diabetes130)",
                      "ModelDeveloper": "hospital-mlops project", "DeveloperContact": "MISSING"},
        "ReleaseInfo": {"ReleaseDate": "2026-11-28"}}  # fmt: skip


def _card(signoffs: dict[str, dict[str, str]], card: dict | None = None) -> RegisteredCard:
    document = card or CARD
    files = {
        artifacts.MODEL_CARD_XML: b'<ModelCard xmlns="https://mc.chai.org/v0.2/schema.xsd"/>',
        artifacts.MODEL_CARD_JSON: json.dumps(document).encode(),
        artifacts.MODEL_CARD_HTML: b"<!doctype html><html lang='en'><title>card</title></html>",
    }
    return RegisteredCard(
        model="readmission-30d",
        version=3,
        model_sha256="a" * 64,
        run_id="run-1",
        files=files,
        evidence_sha256={name: f"{n}" * 64 for n, name in enumerate(sorted(files))},
        signoffs=signoffs,
        required_signoffs=("clinical", "technical"),
        software="hospital-mlops 0.1.0",
        released="2026-11-28",
        card=document,
    )


SIGNED = {"clinical": {"by": "Dr A", "at": "2026-11-29T10:00:00+00:00"},
          "technical": {"by": "B", "at": "2026-11-29T11:00:00+00:00"}}  # fmt: skip


def _resources(bundle: dict) -> dict[str, dict]:
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}


def test_the_bundle_is_valid_fhir_r4_by_the_schema_and_by_fhirs_models() -> None:
    bundle = model_card_bundle(_card(SIGNED), NOW)
    assert schema_problems(bundle) == []
    assert fhir_problems(bundle) == []
    assert bundle["timestamp"] == "2026-12-07T09:30:00Z"


def test_a_card_is_final_only_when_every_role_signed() -> None:
    final = _resources(model_card_bundle(_card(SIGNED), NOW))
    assert final["DocumentReference"]["docStatus"] == "final"
    one = _resources(model_card_bundle(_card({"clinical": SIGNED["clinical"]}), NOW))
    assert one["DocumentReference"]["docStatus"] == "preliminary"
    verifiers = [
        a for a in one["Provenance"]["agent"] if a["type"]["coding"][0]["code"] == "verifier"
    ]
    assert [v["who"]["display"] for v in verifiers] == ["Dr A"]


def test_the_same_card_gives_the_same_resources_and_another_card_others() -> None:
    first, again = model_card_bundle(_card(SIGNED), NOW), model_card_bundle(_card(SIGNED), NOW)
    assert first == again
    other = _card(SIGNED)
    changed = RegisteredCard(**{**other.__dict__, "evidence_sha256": {
        **other.evidence_sha256, artifacts.MODEL_CARD_JSON: "f" * 64}})  # fmt: skip
    assert model_card_bundle(changed, NOW)["id"] != first["id"]


def test_a_missing_contact_or_date_is_left_out_not_invented() -> None:
    resources = _resources(model_card_bundle(_card(SIGNED), NOW))
    assert "telecom" not in resources["Organization"]  # the card reads MISSING
    contact = {**CARD, "BasicInfo": {**CARD["BasicInfo"], "DeveloperContact": "ai@h.example"}}
    card = RegisteredCard(**{**_card(SIGNED, contact).__dict__, "released": ""})
    resources = _resources(model_card_bundle(card, NOW))
    assert resources["Organization"]["telecom"] == [{"system": "email", "value": "ai@h.example"}]
    assert all("creation" not in c["attachment"] for c in resources["DocumentReference"]["content"])


def test_the_risk_card_links_the_answering_versions_fhir_card() -> None:
    config = load_cds_config()
    settings = config.card_settings(config.services[0])
    from tests.unit.test_cds_admission import _answer

    answer = {**_answer(0.62, alert=True), "model_version": "readmission-30d/3"}
    from hospital_mlops.cli.cds import example_request
    from hospital_mlops.ehr.fhir_admission_inputs import admission_model_inputs
    from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
    from hospital_mlops.ehr.fhir_record import gather

    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW
    )
    card = risk_card(answer, inputs, settings, None, NOW, "https://cds.example/")
    links = {link["label"]: link["url"] for link in card["links"]}
    assert links["Model card (FHIR, HL7 AI Transparency)"] == (
        "https://cds.example/model-cards/readmission-30d/3"
    )
    # the admission card's suggested order is AI-influenced, so labelled as the IG requires
    admission = config.card_settings(
        next(s for s in config.services if s.hook == "encounter-start")
    )
    suggested = risk_card(answer, inputs, admission, None, NOW)["suggestions"][0]
    resource = suggested["actions"][0]["resource"]
    assert resource["meta"]["security"] == [AI_ASSERTED]
    assert schema_problems(resource) == []
