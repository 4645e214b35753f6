"""Issue 23: the FHIR we build and read is valid against HL7's FHIR R4 JSON Schema, besides
``fhir.resources`` (tests/fhir_schema.py)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from hospital_mlops.cli.cds import example_request
from hospital_mlops.ehr.cds_card import risk_card
from hospital_mlops.ehr.cds_config import load_cds_config
from hospital_mlops.ehr.fhir_admission_inputs import admission_model_inputs
from hospital_mlops.ehr.fhir_examples import (
    SCENARIOS,
    admission_bundle,
    bundle_from_instance,
    example_bundle,
    example_instance,
)
from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
from hospital_mlops.ehr.fhir_record import gather
from tests.fhir_schema import fhir_problems

NOW = datetime(2026, 12, 6, 12, tzinfo=UTC)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_example_bundle_is_valid_fhir_r4(scenario: str) -> None:
    bundle = example_bundle(scenario)
    assert fhir_problems(bundle) == []
    assert fhir_problems(admission_bundle(bundle)) == []


def test_the_admission_inputs_we_write_are_valid_fhir_r4() -> None:
    """The Coverage and the encounter's serviceType the example builder writes for the
    admission model's payer and admitting service."""
    instance = {**example_instance(), "payer_code": "MC", "medical_specialty": "Orthopedics"}
    bundle = admission_bundle(bundle_from_instance(instance, load_fhir_mapping()))
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert "Coverage" in kinds
    assert fhir_problems(bundle) == []


def test_the_cards_proposed_order_is_valid_fhir_r4() -> None:
    """The draft ServiceRequest the admission card suggests (a CDS Hooks create action)."""
    config = load_cds_config()
    service = next(s for s in config.services if s.hook == "encounter-start")
    body = example_request(hook="encounter-start")
    inputs = admission_model_inputs(
        gather(body["prefetch"], body["context"]), load_fhir_mapping(), NOW
    )
    answer = {
        "prediction_id": "2b0c3f5e-6d1a-4f0e-9a53-1c1f6e7d9a10", "risk": 0.62, "band": "high",
        "alert": True, "reasons": [], "limitations": [],
        "model_version": "post-acute-at-admission/1",
    }  # fmt: skip
    card = risk_card(answer, inputs, config.card_settings(service), None, NOW)
    (suggestion,) = card["suggestions"]
    (action,) = suggestion["actions"]
    assert action["resource"]["resourceType"] == "ServiceRequest"
    assert fhir_problems(action["resource"]) == []


def test_the_schema_check_names_what_is_wrong() -> None:
    bundle = copy.deepcopy(example_bundle("complete"))
    patient = next(e["resource"] for e in bundle["entry"]
                   if e["resource"]["resourceType"] == "Patient")  # fmt: skip
    patient["gender"] = "x"
    encounter = next(e["resource"] for e in bundle["entry"]
                     if e["resource"]["resourceType"] == "Encounter")  # fmt: skip
    encounter["status"] = "discharged"  # not an Encounter status code
    problems = fhir_problems(bundle)
    assert any(p.startswith("Patient/example-patient.gender:") for p in problems), problems
    assert any(".status:" in p and p.startswith("Encounter/") for p in problems), problems


@pytest.mark.parametrize("name", ["synthea_style_inpatient", "synthea_style_oid_systems"])
def test_the_fhir_other_tools_write_is_valid_fhir_r4(name: str) -> None:
    """The hand-built Bundles in Synthea's shape the reader is tested on (tests/fixtures/fhir)."""
    import json
    from pathlib import Path

    bundle = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "fhir" / f"{name}.json").read_text()
    )
    assert bundle["type"] == "transaction"
    assert fhir_problems(bundle) == []
