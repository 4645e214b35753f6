"""The admission CDS service (issue 22): an ``encounter-start`` hook whose card is the post-acute
model's, read from what is known at admission only, and suggesting an early discharge-planning
consult when the risk is at the alert threshold."""

from __future__ import annotations

import copy
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
    assert set(listed["prefetch"]) == {"patient", "encounter", "priorEncounters"}


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
    # payer and specialty are not mapped from FHIR yet: reported, not invented
    assert {"payer_code", "medical_specialty"} <= set(inputs[0].missing)
    assert reader_for("post_acute_diabetes130") is admission_model_inputs
    with pytest.raises(LookupError, match="no FHIR reading"):
        reader_for("readmission_synthetic")


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


def test_a_service_naming_an_undeclared_use_case_is_refused() -> None:
    raw = CONFIG.model_dump(mode="json")
    broken = copy.deepcopy(raw)
    broken["services"][2]["use_case"] = "triage"
    with pytest.raises(ValueError, match="use case 'triage' has no card"):
        CdsConfig.model_validate(broken)
