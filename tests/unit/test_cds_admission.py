"""The admission CDS service (issue 22): an ``encounter-start`` hook whose card is the post-acute
model's, read from what is known at admission only, and suggesting an early discharge-planning
consult when the risk is at the alert threshold."""

from __future__ import annotations

import copy
import dataclasses
from datetime import UTC, datetime

import pytest

from hospital_mlops.cli.cds import example_request
from hospital_mlops.ehr.cds_card import SUMMARY_MAX, not_scored_card, risk_card
from hospital_mlops.ehr.cds_config import CdsConfig, load_cds_config
from hospital_mlops.ehr.cds_request import (
    ADMISSION_TEMPLATES,
    CdsRequestError,
    check_call,
    discovery,
)
from hospital_mlops.ehr.fhir_admission_inputs import admission_model_inputs
from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
from hospital_mlops.ehr.fhir_readers import reader_for
from hospital_mlops.ehr.fhir_record import gather
from hospital_mlops.features.post_acute_diabetes130 import ADMISSION_INPUTS
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS

CONFIG = load_cds_config()
SERVICE = next(s for s in CONFIG.services if s.hook == "encounter-start")
NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


def _answer(risk: float, alert: bool) -> dict:
    return {
        "prediction_id": "2b0c3f5e-6d1a-4f0e-9a53-1c1f6e7d9a10",
        "risk": risk,
        "band": "high" if alert else "low",
        "alert": alert,
        "reasons": [{"feature": "age_years", "text": "Aged 80 to 89, which raises the risk"}],
        "limitations": [],
        "model_version": "post-acute-at-admission/1",
    }


def test_the_service_is_on_encounter_start_with_admission_prefetch_only() -> None:
    assert SERVICE.use_case == "post_acute_at_admission"
    (listed,) = [s for s in discovery(CONFIG)["services"] if s["id"] == SERVICE.id]
    assert listed["hook"] == "encounter-start"
    assert listed["prefetch"] == ADMISSION_TEMPLATES
    assert set(listed["prefetch"]) == {"patient", "encounter", "priorEncounters", "coverage"}


def test_an_encounter_start_call_needs_its_encounter() -> None:
    body = example_request(hook="encounter-start")
    assert check_call(body, SERVICE) is body
    del body["context"]["encounterId"]
    with pytest.raises(CdsRequestError) as err:
        check_call(body, SERVICE)
    assert err.value.status == 400 and ("context.encounterId", "is required") in err.value.problems
    discharge = example_request()  # the discharge hook is not this service's
    with pytest.raises(CdsRequestError, match="encounter-start"):
        check_call(discharge, SERVICE)


def test_admission_inputs_never_read_the_stay() -> None:
    mapping = load_fhir_mapping()
    at_admission = example_request(hook="encounter-start")
    full = example_request()  # the whole stay, discharge included
    assert len(full["prefetch"]["bundle"]["entry"]) > len(
        at_admission["prefetch"]["bundle"]["entry"]
    )
    inputs = [
        admission_model_inputs(gather(b["prefetch"], b["context"]), mapping, NOW)
        for b in (at_admission, full)
    ]
    assert inputs[0].instance == inputs[1].instance  # what the stay adds is never read
    assert set(inputs[0].instance) <= {*ADMISSION_INPUTS, PRIOR_ENCOUNTERS}
    assert inputs[0].scorable
    # the example patient's record has no Coverage and no serviceType: reported, not invented
    assert {"payer_code", "medical_specialty"} <= set(inputs[0].missing)
    assert reader_for("post_acute_diabetes130") is admission_model_inputs
    with pytest.raises(LookupError, match="no FHIR reading"):
        reader_for("readmission_synthetic")


SOPT = "urn:oid:2.16.840.1.113883.3.221.5"
NUCC = "http://nucc.org/provider-taxonomy"


def _coverage(ident: str, code: str, *, order: int | None = 1, **extra: object) -> dict:
    return {
        "resourceType": "Coverage", "id": ident, "status": "active",
        "type": {"coding": [{"system": SOPT, "code": code}]},
        "beneficiary": {"reference": "Patient/example-patient"},
        "payor": [{"display": "a payer"}], **({"order": order} if order else {}), **extra,
    }  # fmt: skip


def _admission_with(*coverages: dict, service: dict | None = None) -> dict:
    body = example_request(hook="encounter-start")
    entries = body["prefetch"]["bundle"]["entry"]
    entries += [{"fullUrl": f"urn:uuid:{c['id']}", "resource": c} for c in coverages]
    if service is not None:
        encounter = next(
            e["resource"] for e in entries if e["resource"]["id"] == "example-encounter"
        )
        encounter["serviceType"] = service
    return body


def _read(body: dict):
    return admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW
    )


def test_the_payer_and_admitting_service_are_read_when_the_ehr_sends_them() -> None:
    """Payer from the primary Coverage in force at admission (US Core's SOPT typing), the
    admitting service from Encounter.serviceType (NUCC taxonomy), into the extract's codes and on
    to the admission model's features."""
    from hospital_mlops.features.post_acute_diabetes130 import admission_feature_row

    service = {"coding": [{"system": NUCC, "code": "207X00000X"}]}  # orthopaedic surgery
    body = _admission_with(
        _coverage("secondary", "2", order=2),  # Medicaid, second
        _coverage("primary", "1", order=1),  # Medicare, first
        _coverage("lapsed", "6", order=0, period={"end": "2001-01-01"}),  # ended long ago
        _coverage("cancelled", "81", order=0, status="cancelled"),
        service=service,
    )
    inputs = _read(body)
    assert (inputs.instance["payer_code"], inputs.instance["medical_specialty"]) == (
        "MC", "Orthopedics"
    )  # fmt: skip
    assert not {"payer_code", "medical_specialty"} & set(inputs.missing) and not inputs.unmapped
    features = admission_feature_row(inputs.instance, inputs.instance[PRIOR_ENCOUNTERS])
    assert (features["payer"], features["admitting_specialty"]) == ("MC", "orthopaedics")


def test_an_unlisted_payer_or_service_is_other_and_reported_never_a_failed_call() -> None:
    snomed = {"coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]}
    inputs = _read(_admission_with(_coverage("c", "96"), service=snomed))
    assert (inputs.instance["payer_code"], inputs.instance["medical_specialty"]) == (
        "OT", "Other"
    )  # fmt: skip
    assert [u.as_dict() for u in inputs.unmapped] == [
        {"input": "payer_code", "system": SOPT, "code": "96"},
        {"input": "medical_specialty", "system": "http://snomed.info/sct", "code": "394802001"},
    ]
    assert inputs.scorable  # optional inputs: the model scores them as "other"
    # none in force (or none sent): missing, as the extract's unknown payer
    lapsed = _read(_admission_with(_coverage("c", "1", status="cancelled")))
    assert "payer_code" not in lapsed.instance and "payer_code" in lapsed.missing


def test_a_coverage_of_another_patient_is_refused_by_name() -> None:
    from hospital_mlops.ehr.fhir_record import FhirInputError

    other = _coverage("theirs", "1", beneficiary={"reference": "Patient/someone-else"})
    with pytest.raises(FhirInputError, match=r"Coverage/theirs: refers to Patient/someone-else"):
        _read(_admission_with(other))


def test_the_coverage_prefetch_is_optional() -> None:
    """Absent with no FHIR server, or unreadable there, the payer is unknown and the call is
    answered; a required key absent is still a 412."""
    import asyncio
    import socket

    from hospital_mlops.ehr.fhir_client import fetch_missing

    body = example_request(hook="encounter-start")
    bundle = body["prefetch"].pop("bundle")
    prior = {"resourceType": "Bundle", "type": "searchset", "entry": []}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            body["prefetch"]["patient"] = resource
        elif resource["id"] == "example-encounter":
            body["prefetch"]["encounter"] = resource
        else:
            prior["entry"].append(entry)
    body["prefetch"]["priorEncounters"] = prior
    assert set(body["prefetch"]) == {"patient", "encounter", "priorEncounters"}
    done = asyncio.run(fetch_missing(dict(body), SERVICE, 2.0))
    assert "coverage" not in done or done["coverage"] is None
    assert "payer_code" in _read({**body, "prefetch": done}).missing
    with socket.socket() as s:  # a FHIR server that refuses connections
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    fetched = asyncio.run(fetch_missing({**body, "fhirServer": dead}, SERVICE, 2.0))
    assert "coverage" not in fetched and fetched["patient"] == body["prefetch"]["patient"]
    del body["prefetch"]["patient"]
    with pytest.raises(CdsRequestError) as err:
        asyncio.run(fetch_missing(body, SERVICE, 2.0))
    assert err.value.status == 412 and "patient" in err.value.problems[0][1]


def test_the_example_builder_writes_payer_and_service_the_reader_reads_back() -> None:
    from hospital_mlops.ehr.fhir_examples import (
        admission_bundle,
        bundle_from_instance,
        example_instance,
    )

    mapping = load_fhir_mapping()
    instance = {**example_instance(), "payer_code": "BC", "medical_specialty": "Cardiology"}
    bundle = admission_bundle(bundle_from_instance(instance, mapping))
    context = {"patientId": "example-patient", "encounterId": "example-encounter"}
    read = admission_model_inputs(gather({"bundle": bundle}, context), mapping, NOW)
    assert (read.instance["payer_code"], read.instance["medical_specialty"]) == ("BC", "Cardiology")


def test_without_the_age_the_admission_model_is_not_used() -> None:
    body = example_request(hook="encounter-start")
    patient = next(
        e["resource"] for e in body["prefetch"]["bundle"]["entry"]
        if e["resource"]["resourceType"] == "Patient"
    )  # fmt: skip
    patient.pop("birthDate")
    from hospital_mlops.ehr.fhir_record import FhirInputError

    with pytest.raises(FhirInputError, match="birthDate"):
        admission_model_inputs(gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW)


def test_the_card_is_the_use_cases_and_suggests_a_consult_at_the_threshold() -> None:
    settings = CONFIG.card_settings(SERVICE)
    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW
    )
    card = risk_card(_answer(0.62, alert=True), inputs, settings, None, NOW, "https://cds.example")
    assert (
        card["summary"] == "Post-acute care need 62% (high)" and len(card["summary"]) < SUMMARY_MAX
    )
    assert "need a facility or home health" in card["detail"]
    assert card["source"]["label"] == "hospital-mlops post-acute model"
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    request = action["resource"]
    assert action["type"] == "create" and request["resourceType"] == "ServiceRequest"
    assert request["status"] == "draft" and request["intent"] == "proposal"
    assert request["subject"] == {"reference": "Patient/example-patient"}
    assert request["encounter"] == {"reference": "Encounter/example-encounter"}
    assert request["code"]["coding"][0]["code"] == "308440001"
    assert card["selectionBehavior"] == "any"
    # below the threshold: the risk, no suggestion
    quiet = risk_card(_answer(0.12, alert=False), inputs, settings, None, NOW)
    assert "suggestions" not in quiet
    # the readmission card keeps its own words and offers no order
    readmission = CONFIG.card_settings(CONFIG.services[0])
    other = risk_card(_answer(0.62, alert=True), inputs, readmission, None, NOW)
    assert other["summary"].startswith("30-day readmission risk") and "suggestions" not in other
    unscored = not_scored_card(["age: not in the record"], inputs, settings)
    assert unscored["summary"] == "Post-acute care need not available for this stay"


def test_every_summary_is_under_140_characters() -> None:
    """CDS Hooks 2.0.1: "less than 140 characters", whatever a site's wording makes of it."""
    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW
    )
    base = CONFIG.card_settings(SERVICE)
    text = base.text.model_copy(update={"risk_label": "R" * 150})
    long = dataclasses.replace(base, text=text)
    cards = [
        risk_card(_answer(0.62, alert=True), inputs, long, None, NOW),
        not_scored_card(["age: not in the record"], inputs, long),
    ]
    assert SUMMARY_MAX < 140
    for card in cards:
        assert len(card["summary"]) < 140, card["summary"]


def test_a_service_naming_an_undeclared_use_case_is_refused() -> None:
    raw = CONFIG.model_dump(mode="json")
    broken = copy.deepcopy(raw)
    broken["services"][2]["use_case"] = "triage"
    with pytest.raises(ValueError, match="use case 'triage' has no card"):
        CdsConfig.model_validate(broken)
