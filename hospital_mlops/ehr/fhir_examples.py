"""Example FHIR R4 patient Bundles built from real diabetes130 encounters (the inverse of
``fhir_readmission_inputs``): what ``hmlops cds example`` posts, and what the tests check the
mapping on.

Each Bundle holds the Patient, the discharge Encounter and its prior visits, Conditions,
laboratory Observations (HbA1c and glucose with units), Procedures and MedicationRequests
(RxNorm), coded with the systems of ``config/fhir_mapping.yaml``. Dates are synthetic (the extract
has none); the counts and codes are the encounter's own. What the extract holds that FHIR
cannot say is documented in docs/ehr-integration.md: a medication switch without a dose change,
and Health Facts dispositions with no NUBC or HL7 code (8, 10, 16, 17).
"""

from __future__ import annotations

import copy
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from hospital_mlops.ehr.fhir_admission_inputs import ETHNICITY_URL, RACE_URL
from hospital_mlops.ehr.fhir_mapping import CodeMap, FhirMapping, TextCodeMap
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
OMB = "urn:oid:2.16.840.1.113883.6.238"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RACE_CODES = {"Caucasian": "2106-3", "AfricanAmerican": "2054-5", "Asian": "2028-9"}
RACE_CODES["Other"] = "2131-1"
GENDERS = {"Male": "male", "Female": "female", "Unknown/Invalid": "unknown"}
PRIORITY = {1: "EM", 2: "UR", 3: "EL", 7: "EM"}
# The result a band stands for (HbA1c %, glucose mg/dL)
A1C_VALUES = {">8": 8.6, ">7": 7.4, "Norm": 5.6}
GLUCOSE_VALUES = {">300": 320.0, ">200": 240.0, "Norm": 140.0}
OTHER_LABS = ("2160-0", "2951-2", "2823-3", "718-7", "6690-2", "777-3", "2075-0", "3094-0")
OTHER_DIAGNOSES = ("401.9", "272.4", "428.0", "427.31", "585.9", "414.01", "276.1", "V45.81")
OTHER_DRUGS = ("29046", "197361", "83367", "36567", "1191", "32968", "8640", "4603", "35636")
UNLISTED_SNOMED = "404684003"  # "clinical finding": a known system, no entry in the table


def _inverse(
    maps: tuple[CodeMap, ...] | tuple[TextCodeMap, ...], code: int | str, system: str | None = None
) -> dict | None:
    for table in maps:
        if system is not None and table.system != system:
            continue
        for fhir_code, value in table.codes.items():
            if value == code:
                return {"coding": [{"system": table.system, "code": fhir_code}]}
    return None


def _ref(kind: str, ident: str) -> dict[str, str]:
    return {"reference": f"{kind}/{ident}"}


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def bundle_from_instance(
    instance: dict[str, Any],
    mapping: FhirMapping,
    *,
    patient_id: str = "example-patient",
    encounter_id: str = "example-encounter",
    discharged_at: datetime = datetime(2026, 3, 10, 15, 0, tzinfo=UTC),
    bundle_type: str = "collection",
) -> dict[str, Any]:
    """A Bundle that ``fhir_readmission_inputs`` reads back as ``instance`` (up to the documented
    gaps)."""
    resources: list[dict[str, Any]] = []
    days = int(instance["time_in_hospital"])
    start = discharged_at - timedelta(days=days)
    subject = _ref("Patient", patient_id)
    resources.append(_patient(instance, patient_id, start))
    encounter: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": encounter_id,
        "status": "finished",
        "class": {"system": ACT_CODE, "code": "IMP"},
        "subject": subject,
        "period": {"start": _iso(start), "end": _iso(discharged_at)},
        "hospitalization": {},
    }
    if instance["admission_type_id"] in PRIORITY:
        code = PRIORITY[instance["admission_type_id"]]
        encounter["priority"] = _inverse(mapping.admission_type, {"EM": 1, "UR": 2, "EL": 3}[code])
    nubc_origin = "https://www.nubc.org/CodeSystem/PointOfOrigin"
    admit = _inverse(mapping.admission_source, instance["admission_source_id"], nubc_origin)
    discharge = _inverse(mapping.discharge_disposition, instance["discharge_disposition_id"])
    if admit:
        encounter["hospitalization"]["admitSource"] = admit
    if discharge:
        encounter["hospitalization"]["dischargeDisposition"] = discharge
    payer = instance.get("payer_code")
    if payer and mapping.payer is not None:
        coverage = _coverage(payer, mapping.payer.systems, subject, start)
        resources += [coverage] if coverage else []
    specialty = instance.get("medical_specialty")
    if specialty and mapping.admitting_specialty is not None:
        service = _inverse(mapping.admitting_specialty.systems, specialty)
        if service:
            encounter["serviceType"] = service
    conditions = _conditions(instance, patient_id, encounter_id, start)
    encounter["diagnosis"] = [{"condition": _ref("Condition", conditions[0]["id"]), "rank": 1}]
    resources += [encounter, *conditions]
    resources += _prior_visits(instance, subject, start)
    resources += _labs(instance, subject, encounter_id, start, discharged_at)
    resources += [
        {
            "resourceType": "Procedure",
            "id": f"proc-{n}",
            "status": "completed",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "387713003"}]},
            "subject": subject,
            "encounter": _ref("Encounter", encounter_id),
            "performedDateTime": _iso(start + timedelta(hours=6 + n)),
        }
        for n in range(int(instance["num_procedures"]))
    ]
    resources += _medications(instance, mapping, subject, encounter_id, start)
    return {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [
            {"fullUrl": f"urn:uuid:{r['resourceType'].lower()}-{r['id']}", "resource": r}
            for r in resources
        ],
    }


def _coverage(
    payer: str, systems: tuple[TextCodeMap, ...], subject: dict, start: datetime
) -> dict[str, Any] | None:
    """The patient's coverage in force at admission, typed with the first code of the payer."""
    kind = _inverse(systems, payer)
    if kind is None:
        return None
    return {
        "resourceType": "Coverage",
        "id": "coverage-1",
        "status": "active",
        "type": kind,
        "beneficiary": subject,
        "payor": [{"display": "the patient's payer"}],
        "period": {"start": _iso(start - timedelta(days=365))},
        "order": 1,
    }


def _patient(instance: dict[str, Any], patient_id: str, start: datetime) -> dict[str, Any]:
    low = int(instance["age"].strip("[").split("-")[0])
    age = low + 5
    born = (start - timedelta(days=1)).date().replace(year=start.year - age)
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id,
        "gender": GENDERS[instance["gender"]],
        "birthDate": born.isoformat(),
    }
    race = instance.get("race")
    if race == "Hispanic":
        url, code = ETHNICITY_URL, "2135-2"
    elif race in RACE_CODES:
        url, code = RACE_URL, RACE_CODES[race]
    else:
        return patient
    patient["extension"] = [
        {
            "url": url,
            "extension": [{"url": "ombCategory", "valueCoding": {"system": OMB, "code": code}}],
        }
    ]
    return patient


def _conditions(
    instance: dict[str, Any], patient_id: str, encounter_id: str, start: datetime
) -> list[dict[str, Any]]:
    primary = instance.get("diag_1")
    out = []
    for n in range(int(instance["number_diagnoses"])):
        if n == 0 and primary is None:
            coding = {"system": "http://snomed.info/sct", "code": UNLISTED_SNOMED}
        elif n == 0:
            coding = {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": str(primary)}
        else:
            code = OTHER_DIAGNOSES[(n - 1) % len(OTHER_DIAGNOSES)]
            coding = {"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": code}
        out.append(
            {
                "resourceType": "Condition",
                "id": f"cond-{n}",
                "code": {"coding": [coding]},
                "subject": _ref("Patient", patient_id),
                "encounter": _ref("Encounter", encounter_id),
                "recordedDate": _iso(start + timedelta(hours=2)),
            }
        )
    return out


def _prior_visits(instance: dict[str, Any], subject: dict, start: datetime) -> list[dict[str, Any]]:
    plan = [
        ("AMB", int(instance["number_outpatient"]), 0),
        ("EMER", int(instance["number_emergency"]), 0),
        ("IMP", int(instance["number_inpatient"]), 0),
        # inpatient stays before the last year: the extract's earlier encounters beyond them
        (
            "IMP",
            max(int(instance.get(PRIOR_ENCOUNTERS, 0)) - int(instance["number_inpatient"]), 0),
            400,
        ),
    ]
    out = []
    for cls, count, offset in plan:
        for n in range(count):
            ended = start - timedelta(days=offset + 5 + n * (300 // max(count, 1)) % 350)
            out.append(
                {
                    "resourceType": "Encounter",
                    "id": f"prior-{cls.lower()}-{offset}-{n}",
                    "status": "finished",
                    "class": {"system": ACT_CODE, "code": cls},
                    "subject": subject,
                    "period": {"start": _iso(ended - timedelta(hours=20)), "end": _iso(ended)},
                }
            )
    return out


def _observation(
    ident: str, code: str, subject: dict, encounter_id: str, when: datetime, value: dict | None
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": ident,
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": subject,
        "encounter": _ref("Encounter", encounter_id),
        "effectiveDateTime": _iso(when),
    }
    if value is not None:
        resource["valueQuantity"] = value
    return resource


def _labs(
    instance: dict[str, Any], subject: dict, encounter_id: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    ucum = "http://unitsofmeasure.org"
    out = []
    if instance["A1Cresult"] in A1C_VALUES:
        value = {
            "value": A1C_VALUES[instance["A1Cresult"]],
            "unit": "%",
            "system": ucum,
            "code": "%",
        }
        out.append(
            _observation(
                "lab-a1c", "4548-4", subject, encounter_id, start + timedelta(hours=4), value
            )
        )
    if instance["max_glu_serum"] in GLUCOSE_VALUES:
        mg = GLUCOSE_VALUES[instance["max_glu_serum"]]
        value = {"value": mg, "unit": "mg/dL", "system": ucum, "code": "mg/dL"}
        out.append(
            _observation(
                "lab-glucose", "2345-7", subject, encounter_id, start + timedelta(hours=3), value
            )
        )
    span = max((end - start).total_seconds(), 3600)
    total = int(instance["num_lab_procedures"])
    for n in range(max(total - len(out), 0)):
        when = start + timedelta(seconds=span * (n + 1) / (total + 1))
        code = OTHER_LABS[n % len(OTHER_LABS)]
        out.append(_observation(f"lab-{n}", code, subject, encounter_id, when, None))
    return out


def _medications(
    instance: dict[str, Any],
    mapping: FhirMapping,
    subject: dict,
    encounter_id: str,
    start: datetime,
) -> list[dict[str, Any]]:
    rx = mapping.medications.rxnorm_system
    code_of: dict[str, str] = {}
    for code, column in mapping.medications.ingredients.items():
        code_of.setdefault(column, code)
    out: list[dict[str, Any]] = []

    def request(ident: str, concept: dict | None, dose: float | None, **extra: Any) -> dict:
        body: dict[str, Any] = {
            "resourceType": "MedicationRequest",
            "id": ident,
            "status": extra.pop("status", "active"),
            "intent": "order",
            "subject": subject,
            "encounter": _ref("Encounter", encounter_id),
            "authoredOn": _iso(start + timedelta(hours=1)),
            **extra,
        }
        if concept is not None:
            body["medicationCodeableConcept"] = concept
        if dose is not None:
            body["dosageInstruction"] = [
                {"doseAndRate": [{"doseQuantity": {"value": dose, "unit": "mg"}}]}
            ]
        return body

    diabetes = [c for c in code_of if instance.get(c, "No") != "No"]
    for column in diabetes:
        concept = {"coding": [{"system": rx, "code": code_of[column]}]}
        state = instance[column]
        if state == "Steady":
            out.append(request(f"med-{column}", concept, 10.0))
            continue
        out.append(request(f"med-{column}-before", concept, 10.0, status="stopped"))
        new_dose = 20.0 if state == "Up" else 5.0
        prior = _ref("MedicationRequest", f"med-{column}-before")
        out.append(request(f"med-{column}", concept, new_dose, priorPrescription=prior))
    for n in range(max(int(instance["num_medications"]) - len(diabetes), 0)):
        if n < len(OTHER_DRUGS):
            concept = {"coding": [{"system": rx, "code": OTHER_DRUGS[n]}]}
            out.append(request(f"drug-{n}", concept, None))
        else:
            out.append(
                request(f"drug-{n}", None, None, medicationReference=_ref("Medication", f"m{n}"))
            )
    return out


SCENARIOS = ("complete", "sparse", "unmapped")
SPARSE_DROPS = ("Procedure", "MedicationRequest")


def example_instance(seed: int = 7) -> dict[str, Any]:
    """A real encounter from the extract's last fifth (its newest years): inside the intended
    use, with a recorded primary diagnosis and an HbA1c, so every part of a card shows."""
    return copy.deepcopy(_example_instance(seed))


@functools.lru_cache(maxsize=8)
def _example_instance(seed: int) -> dict[str, Any]:
    from hospital_mlops.features import diabetes130_out_of_cohort_row
    from hospital_mlops.features.diabetes130_stream import labelled_instances

    instances, _ = labelled_instances((81_000, 101_765), 200, seed)
    for instance in instances:
        if (
            instance.get("diag_1")
            and instance["A1Cresult"] != "None"
            and not diabetes130_out_of_cohort_row(instance)
            and instance["num_lab_procedures"] >= 3
            and instance["discharge_disposition_id"] == 1  # home: the common case
        ):
            return instance
    return instances[0]


def example_bundle(
    scenario: str = "complete", seed: int = 7, discharged_at: datetime | None = None
) -> dict[str, Any]:
    """The example patient's Bundle: ``complete``; ``sparse`` (no race, admission coding, HbA1c,
    glucose, procedures, medications or prior visits: still scored, the gaps reported); or
    ``unmapped`` (a primary diagnosis and a discharge code the mapping does not list)."""
    from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping

    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}")
    # discharged this hour unless told: the card's data is as fresh as a real discharge's
    when = discharged_at or datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    bundle = bundle_from_instance(example_instance(seed), load_fhir_mapping(), discharged_at=when)
    if scenario == "complete":
        return bundle
    kept = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        kind = resource["resourceType"]
        if scenario == "sparse":
            if kind in SPARSE_DROPS or resource["id"] in ("lab-a1c", "lab-glucose"):
                continue
            if kind == "Encounter" and resource["id"].startswith("prior-"):
                continue
            resource.pop("extension", None)  # no race or ethnicity recorded
            if kind == "Encounter":
                resource.pop("priority", None)
                resource["hospitalization"].pop("admitSource", None)
        elif kind == "Condition" and resource["id"] == "cond-0":
            resource["code"] = {
                "coding": [{"system": "http://snomed.info/sct", "code": UNLISTED_SNOMED}]
            }
        elif kind == "Encounter" and resource["id"] == "example-encounter":
            status = "https://www.nubc.org/CodeSystem/PatDischargeStatus"
            resource["hospitalization"]["dischargeDisposition"] = {
                "coding": [{"system": status, "code": "21"}]  # court/law enforcement: unlisted
            }
        kept.append(entry)
    return {**bundle, "entry": kept}


def admission_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """The same patient as known at admission: the Patient, the Encounters and the Coverage
    only, the current encounter in progress (no end, no discharge disposition). Nothing recorded
    during the stay."""
    entries = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] not in ("Patient", "Encounter", "Coverage"):
            continue
        resource = copy.deepcopy(resource)
        if resource["resourceType"] == "Encounter" and resource["id"] == "example-encounter":
            resource["status"] = "in-progress"
            resource.get("period", {}).pop("end", None)
            resource.get("hospitalization", {}).pop("dischargeDisposition", None)
        entries.append({**entry, "resource": resource})
    return {**bundle, "entry": entries}
