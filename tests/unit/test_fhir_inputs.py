"""FHIR R4 → the model's inputs, on Bundles built from real diabetes130 encounters: the round
trip gives the features the model was trained on; gaps are reported, never defaulted; what
cannot be read is refused naming the resource."""

from __future__ import annotations

import copy
import functools
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hospital_mlops.ehr.fhir_examples import bundle_from_instance, example_bundle
from hospital_mlops.ehr.fhir_mapping import FhirMappingError, load_fhir_mapping
from hospital_mlops.ehr.fhir_readmission_inputs import model_inputs
from hospital_mlops.ehr.fhir_record import FhirInputError, gather
from hospital_mlops.features import diabetes130_feature_row
from hospital_mlops.features.diabetes130_stream import labelled_instances
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS

MAPPING = load_fhir_mapping()
CONTEXT = {"patientId": "example-patient", "encounterId": "example-encounter"}
NOW = datetime(2026, 3, 10, 16, 0, tzinfo=UTC)
_example = functools.partial(example_bundle, discharged_at=datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
# what FHIR cannot say (docs/ehr-integration.md): a medication switch without a dose change,
# and the extract's own earlier-encounter count where the year's admissions exceed it
KNOWN_GAPS = {"diabetes_medication_changed", "earlier_encounters_in_extract"}


@functools.lru_cache(maxsize=1)
def _real(n: int = 300) -> list[dict[str, Any]]:
    instances, _ = labelled_instances((81_000, 101_765), n, seed=5)
    return instances


def _read(bundle: dict[str, Any], **context: str):
    record = gather({"bundle": bundle}, {**CONTEXT, **context})
    return model_inputs(record, MAPPING, NOW)


def _features(instance: dict[str, Any]) -> dict[str, Any]:
    return diabetes130_feature_row(instance, int(instance[PRIOR_ENCOUNTERS]))


def _same(a: Any, b: Any) -> bool:
    return a == b or (a != a and b != b)  # NaN == NaN here


def test_real_encounters_round_trip_to_the_features_the_model_was_trained_on() -> None:
    exact = 0
    for original in _real():
        derived = _read(bundle_from_instance(original, MAPPING)).instance
        want, got = _features(original), _features(derived)
        differ = {k for k in want if not _same(want[k], got[k])}
        assert differ <= KNOWN_GAPS, (differ, original)
        exact += not differ
        # the documented gaps, exactly as documented
        prior = max(int(original[PRIOR_ENCOUNTERS]), int(original["number_inpatient"]))
        assert derived[PRIOR_ENCOUNTERS] == prior
        changed = any(derived[m] in ("Up", "Down") for m in derived if m in original)
        assert derived["change"] == ("Ch" if changed else "No")
    assert exact >= 0.6 * len(_real())  # most encounters are exact in every feature


def test_a_complete_bundle_reports_nothing_missing_and_dates_its_data() -> None:
    inputs = _read(_example("complete"))
    assert inputs.scorable and not inputs.unmapped and not inputs.out_of_range
    assert inputs.missing == []
    assert inputs.data_start < inputs.data_end <= NOW
    times = inputs.instance["observation_times"]
    assert set(times) >= {"time_in_hospital", "A1Cresult"}


def test_a_sparse_bundle_is_scored_with_its_gaps_reported_not_guessed() -> None:
    inputs = _read(_example("sparse"))
    assert inputs.scorable
    assert set(inputs.missing) == {"race", "admission_type_id", "admission_source_id"}
    # the extract's own codes for "not available", as its source systems sent them
    assert inputs.instance["admission_type_id"] == 5 and inputs.instance["race"] is None
    assert inputs.instance["A1Cresult"] == "None" and inputs.instance["num_procedures"] == 0


def test_unmapped_codes_are_reported_with_their_system() -> None:
    inputs = _read(_example("unmapped"))
    unmapped = {(u.input, u.code) for u in inputs.unmapped}
    assert unmapped == {("diag_1", "404684003"), ("discharge_disposition_id", "21")}
    assert inputs.instance["diag_1"] is None  # the model's "missing" group, not a guess
    assert inputs.instance["discharge_disposition_id"] == 25  # the extract's "Not Mapped"


@pytest.mark.parametrize(
    ("system", "code", "group"),
    [
        ("http://hl7.org/fhir/sid/icd-10-cm", "E11.65", "diabetes"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "I50.9", "circulatory"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "R07.9", "respiratory"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "N39.0", "genitourinary"),
        ("http://hl7.org/fhir/sid/icd-10-cm", "D50.9", "other"),
        ("http://snomed.info/sct", "42343007", "circulatory"),
        ("http://snomed.info/sct", "44054006", "diabetes"),
        ("http://hl7.org/fhir/sid/icd-9-cm", "486", "respiratory"),
    ],
)
def test_primary_diagnoses_map_to_the_trained_group_from_each_system(system, code, group) -> None:
    bundle = _example("complete")
    condition = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "cond-0")
    condition["code"] = {"coding": [{"system": system, "code": code}]}
    inputs = _read(bundle)
    assert _features(inputs.instance)["primary_diagnosis_group"] == group


def test_lab_units_are_converted_and_a_foreign_unit_is_refused() -> None:
    bundle = _example("complete")
    a1c = next(e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "lab-a1c")
    a1c["valueQuantity"] = {"value": 64, "unit": "mmol/mol", "code": "mmol/mol"}  # 8.0 %
    assert _read(bundle).instance["A1Cresult"] == ">8"
    a1c["valueQuantity"] = {"value": 55, "unit": "mmol/mol", "code": "mmol/mol"}  # 7.2 %
    assert _read(bundle).instance["A1Cresult"] == ">7"
    a1c["valueQuantity"] = {"value": 0.08, "unit": "1", "code": "1"}  # a fraction, not %
    with pytest.raises(FhirInputError, match=r"lab-a1c: HbA1c in unit '1'"):
        _read(bundle)


def _broken(change) -> dict[str, Any]:
    bundle = copy.deepcopy(_example("complete"))
    change({e["resource"]["id"]: e["resource"] for e in bundle["entry"]})
    return bundle


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        (lambda r: r["example-patient"].pop("birthDate"), "Patient/example-patient", "birthDate"),
        (lambda r: r["example-encounter"].pop("period"), "Encounter/example-encounter", "period"),
        (
            lambda r: r["example-patient"].update(birthDate="03/04/1950"),
            "Patient/example-patient",
            "fails FHIR R4 validation at birthDate",
        ),
        (
            lambda r: r["cond-1"].update(subject={"reference": "Patient/someone-else"}),
            "Condition/cond-1",
            "not Patient/example-patient",
        ),
    ],
)
def test_what_cannot_be_read_is_refused_naming_the_resource(change, where, message) -> None:
    with pytest.raises(FhirInputError) as caught:
        _read(_broken(change))
    assert any(w == where and message in m for w, m in caught.value.problems), caught.value.problems


def test_a_coding_in_a_system_nobody_knows_is_read_without_it_and_named() -> None:
    """Issue 23: not a 400 for the whole call. The input is read as the extract's own "not
    mapped" (or missing) value, and the card names the input, its code and the system found."""
    from hospital_mlops.ehr.cds_card import not_scored_card
    from hospital_mlops.ehr.cds_config import load_cds_config

    def change(r: dict[str, Any]) -> None:
        r["cond-0"].update(code={"coding": [{"system": "urn:local", "code": "X"}]})
        r["example-encounter"]["hospitalization"].update(
            dischargeDisposition={"coding": [{"system": "urn:local", "code": "H"}]}
        )

    out = _read(_broken(change))
    assert out.scorable
    assert out.instance["discharge_disposition_id"] == 25  # the extract's "not mapped"
    assert out.instance["diag_1"] is None
    unmapped = {(u.input, u.system, u.code) for u in out.unmapped}
    assert {
        ("diag_1", "urn:local", "X"),
        ("discharge_disposition_id", "urn:local", "H"),
    } <= unmapped
    config = load_cds_config()
    card = not_scored_card(["shown for the test"], out, config.card_settings(config.services[0]))
    assert "diag_1 (X in urn:local)" in card["detail"]
    assert "discharge_disposition_id (H in urn:local)" in card["detail"]


# --- FHIR written by other tools (tests/fixtures/fhir): aliases of the code systems read ------

OTHER_TOOLS = Path(__file__).resolve().parents[1] / "fixtures" / "fhir"
OTHER_CONTEXT = {
    "patientId": "6c1d0b2a-8a4e-4f5b-9a1e-1f2d3c4b5a60",
    "encounterId": "0b7e4f8c-2d6a-4c3b-8e9f-7a6b5c4d3e21",
}


def _other(name: str, mapping: Any = MAPPING) -> Any:
    bundle = json.loads((OTHER_TOOLS / f"{name}.json").read_text())
    record = gather({"bundle": bundle}, OTHER_CONTEXT)
    return model_inputs(record, mapping, datetime(2026, 3, 9, 20, tzinfo=UTC))


def test_a_synthea_style_transaction_bundle_reads_through_the_nubc_alias() -> None:
    """urn:uuid references, US Core extensions, and NUBC discharge status under
    http://www.nubc.org/patient-discharge (US Core's examples and Synthea): read as the NUBC
    code system, so "01" is home (1), and the reading says which alias it met."""
    out = _other("synthea_style_inpatient")
    assert out.scorable and not out.unmapped and not out.missing
    expected = {"race": "AfricanAmerican", "gender": "Female", "age": "[70-80)",
                "admission_type_id": 1, "admission_source_id": 7, "discharge_disposition_id": 1,
                "diag_1": "250.00", "A1Cresult": ">8", "number_emergency": 1,
                "time_in_hospital": 5}  # fmt: skip
    assert {k: out.instance[k] for k in expected} == expected
    alias = "http://www.nubc.org/patient-discharge"
    assert out.aliases_read == [f"{alias} as https://www.nubc.org/CodeSystem/PatDischargeStatus"]
    # without the alias list the same code would be unrecognized: the list is what reads it
    bare = MAPPING.model_copy(update={"code_system_aliases": ()})
    unread = _other("synthea_style_inpatient", bare)
    assert unread.instance["discharge_disposition_id"] == 25
    assert [(u.input, u.system) for u in unread.unmapped] == [("discharge_disposition_id", alias)]


def test_code_systems_written_as_oids_read_the_same() -> None:
    inline = _other("synthea_style_inpatient")
    oids = _other("synthea_style_oid_systems")
    assert oids.instance == inline.instance
    assert len(oids.aliases_read) == 5 and all("urn:oid:" in a for a in oids.aliases_read)


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ({"alias": "urn:x", "canonical": "urn:nobody-reads-this", "source": "a made-up source"},
         "is no system read here"),
        ({"alias": "http://www.nubc.org/patient-discharge",
          "canonical": "http://loinc.org", "source": "a made-up source"}, "named twice"),
    ],
)  # fmt: skip
def test_an_alias_of_nothing_read_or_named_twice_is_refused(alias, message) -> None:
    from pydantic import ValidationError

    from hospital_mlops.ehr.fhir_mapping import FhirMapping

    raw = MAPPING.model_dump(mode="json", by_alias=True)
    raw["code_system_aliases"].append(alias)
    with pytest.raises(ValidationError, match=message):
        FhirMapping.model_validate(raw)


def test_another_patients_resources_or_a_missing_encounter_are_refused() -> None:
    with pytest.raises(FhirInputError, match="not the context's patient"):
        _read(_example("complete"), patientId="other")
    with pytest.raises(FhirInputError, match="no current encounter"):
        _read(_example("complete"), encounterId="not-there")


def test_an_out_of_range_stay_is_not_scored_and_says_why() -> None:
    bundle = _example("complete")
    encounter = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["id"] == "example-encounter"
    )
    encounter["period"]["start"] = "2026-02-01T10:00:00Z"  # 37 days
    inputs = _read(bundle)
    assert not inputs.scorable
    assert any("time_in_hospital: 37 days" in r for r in inputs.why_not_scored())


def test_separate_prefetch_keys_read_like_one_bundle() -> None:
    bundle = _example("complete")
    by_type: dict[str, list] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], []).append(entry)

    def searchset(kind: str) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": by_type.get(kind, [])}

    encounters = [e["resource"] for e in by_type["Encounter"]]
    prefetch = {
        "patient": by_type["Patient"][0]["resource"],
        "encounter": next(e for e in encounters if e["id"] == "example-encounter"),
        "conditions": searchset("Condition"),
        "observations": searchset("Observation"),
        "medications": searchset("MedicationRequest"),
        "procedures": searchset("Procedure"),
        "priorEncounters": searchset("Encounter"),
    }
    split = model_inputs(gather(prefetch, CONTEXT), MAPPING, NOW)
    assert split.instance == _read(bundle).instance
    # a key the EHR could not fetch is left out (CDS Hooks 2.0): unknown, not empty
    unfetched = {k: v for k, v in prefetch.items() if k != "procedures"}
    partial = model_inputs(gather(unfetched, CONTEXT), MAPPING, NOW)
    assert "num_procedures" in partial.missing and not partial.scorable
    # null is the EHR's answer that there is none: known, and empty
    none = model_inputs(gather({**prefetch, "procedures": None}, CONTEXT), MAPPING, NOW)
    assert none.instance["num_procedures"] == 0 and "num_procedures" not in none.missing
    # the encounter key alone says nothing about earlier visits: unknown, never zero
    alone = {k: v for k, v in prefetch.items() if k != "priorEncounters"}
    history = model_inputs(gather(alone, CONTEXT), MAPPING, NOW)
    assert {"number_inpatient", "number_emergency", "prior_encounters"} <= set(history.missing)
    assert not history.scorable and "number_inpatient" not in history.instance


def test_the_mapping_file_is_validated(tmp_path) -> None:
    text = (load_fhir_mapping.__globals__["config_path"]("fhir_mapping.yaml")).read_text()
    bad = tmp_path / "m.yaml"
    bad.write_text(
        text.replace('icd9: "429.9", group: circulatory', 'icd9: "486", group: circulatory')
    )
    with pytest.raises(FhirMappingError, match="486 is in group respiratory"):
        load_fhir_mapping(bad)
    bad.write_text(text.replace('"6809": metformin', '"6809": aspirin'))
    with pytest.raises(FhirMappingError, match="aspirin"):
        load_fhir_mapping(bad)
