"""One patient's FHIR R4 record, gathered from a CDS Hooks prefetch.

``gather`` takes a prefetch (single resources, searchset Bundles, or one ``bundle`` key holding a
whole patient Bundle of any type), validates every resource it reads with ``fhir.resources``
(its R4B models: identical to R4 for the resource types read here), and checks that they are one
patient's: a ``PatientRecord`` of the current encounter, with which resource types the EHR
supplied. What cannot be read at all is refused (``FhirInputError``, a 400 naming the resource
and the problem). Pure: no HTTP here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from hospital_mlops.ehr.fhir_datatypes import (
    INPATIENT_CLASSES,
    as_utc,
    encounter_class,
    reference_id,
)

USED_TYPES = (
    "Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure", "Coverage"
)  # fmt: skip
# the element that names each type's patient (every other type's is ``subject``)
PATIENT_ELEMENT = {"Coverage": "beneficiary"}
# The prefetch keys the service declares, and the resource type each one supplies.
PREFETCH_TYPES = {
    "patient": "Patient",
    "encounter": "Encounter",
    "conditions": "Condition",
    "observations": "Observation",
    "medications": "MedicationRequest",
    "procedures": "Procedure",
    "priorEncounters": "PriorEncounters",  # the visit history: not implied by the encounter key
    "coverage": "Coverage",
}
BUNDLE_KEY = "bundle"
PRIOR_VISITS = "PriorEncounters"  # supplied by the priorEncounters key or a whole Bundle
MAX_RESOURCES = 5000


class FhirInputError(ValueError):
    """The prefetch cannot be read: every problem, each naming where it is."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        where, message = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{where}: {message}{more}")


@dataclass(frozen=True)
class PatientRecord:
    """One patient's validated resources, and which resource types the EHR supplied (a type it
    did not supply is unknown, not empty)."""

    patient: Any
    encounter: Any
    conditions: list[Any]
    observations: list[Any]
    medication_requests: list[Any]
    procedures: list[Any]
    other_encounters: list[Any]
    supplied: frozenset[str]
    coverages: tuple[Any, ...] = ()  # the patient's, as supplied (any status or period)


def _resources_of(value: Any, where: str) -> Iterable[tuple[str, dict[str, Any], dict[str, str]]]:
    """(where, resource, fullUrl map) for a resource or each entry of a Bundle."""
    if value is None:
        return
    if not isinstance(value, dict) or not isinstance(value.get("resourceType"), str):
        raise FhirInputError([(f"prefetch.{where}", "must be a FHIR resource or Bundle")])
    if value["resourceType"] != "Bundle":
        yield where, value, {}
        return
    entries = value.get("entry") or []
    if not isinstance(entries, list):
        raise FhirInputError([(f"prefetch.{where}.entry", "must be a list")])
    urls: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            resource = entry["resource"]
            full_url = entry.get("fullUrl")
            if isinstance(full_url, str) and isinstance(resource.get("id"), str):
                urls[full_url] = f"{resource.get('resourceType')}/{resource['id']}"
    for n, entry in enumerate(entries):
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise FhirInputError([(f"prefetch.{where}.entry[{n}]", "has no resource")])
        yield f"{where}.entry[{n}]", resource, urls


def _validated(resource: dict[str, Any], where: str, problems: list[tuple[str, str]]) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    kind = resource["resourceType"]
    label = f"{kind}/{resource.get('id', '?')}" if isinstance(resource.get("id"), str) else where
    try:
        return get_fhir_model_class(kind).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        path = ".".join(str(p) for p in first["loc"]) or "resource"
        problems.append((label, f"fails FHIR R4 validation at {path}: {first['msg'][:160]}"))
    except (TypeError, ValueError) as exc:
        problems.append((label, f"fails FHIR R4 validation: {str(exc)[:160]}"))
    return None


def gather(prefetch: Mapping[str, Any], context: Mapping[str, Any]) -> PatientRecord:
    """The validated resources of ``context.patientId`` and its current encounter
    (``context.encounterId``; for patient-view without one, the newest inpatient encounter)."""
    if not isinstance(prefetch, Mapping):
        raise FhirInputError([("prefetch", "must be an object")])
    patient_id = context.get("patientId")
    if not isinstance(patient_id, str) or not patient_id:
        raise FhirInputError([("context.patientId", "is required")])
    supplied: set[str] = set()
    raw: list[tuple[str, dict[str, Any], dict[str, str]]] = []
    for key, value in prefetch.items():
        if key == BUNDLE_KEY and value is not None:
            supplied |= {*USED_TYPES, PRIOR_VISITS}
        elif key in PREFETCH_TYPES:
            # null is the client's answer that there is none (CDS Hooks 2.0): known, empty
            supplied.add(PREFETCH_TYPES[key])
        raw.extend(_resources_of(value, str(key)))
        if len(raw) > MAX_RESOURCES:
            raise FhirInputError([("prefetch", f"more than {MAX_RESOURCES} resources")])
    problems: list[tuple[str, str]] = []
    by_type: dict[str, list[tuple[Any, dict[str, str]]]] = {t: [] for t in USED_TYPES}
    seen: set[tuple[str, str]] = set()
    for where, resource, urls in raw:
        kind = resource["resourceType"]
        if kind not in by_type:
            continue  # Practitioner, Organization, …: not read
        model = _validated(resource, where, problems)
        if model is None:
            continue
        identity = (kind, str(model.id or where))
        if identity in seen:
            continue  # the same resource in two prefetch keys
        seen.add(identity)
        by_type[kind].append((model, urls))
    if problems:
        raise FhirInputError(problems)
    patients = [p for p, _ in by_type["Patient"]]
    if not patients:
        raise FhirInputError([("Patient", "the prefetch has no Patient resource")])
    other_ids = sorted({p.id for p in patients if p.id != patient_id})
    if other_ids:
        raise FhirInputError(
            [(f"Patient/{other_ids[0]}", f"is not the context's patient ({patient_id})")]
        )
    mismatched = []
    for kind in USED_TYPES[1:]:
        for model, urls in by_type[kind]:
            subject = getattr(model, PATIENT_ELEMENT.get(kind, "subject"), None)
            if reference_id(subject, "Patient", urls) != patient_id:
                shown = getattr(subject, "reference", None) or "no subject"
                mismatched.append(
                    (f"{kind}/{model.id}", f"refers to {shown}, not Patient/{patient_id}")
                )
    if mismatched:
        raise FhirInputError(mismatched)
    encounters = [m for m, _ in by_type["Encounter"]]
    current = _current_encounter(encounters, context.get("encounterId"))
    if current is None:
        raise FhirInputError([("Encounter", "the prefetch has no current encounter")])

    def of_encounter(kind: str, when: str) -> list[Any]:
        return [m for m, urls in by_type[kind] if _belongs(m, urls, current, when)]

    return PatientRecord(
        patient=patients[0],
        encounter=current,
        conditions=of_encounter("Condition", "recordedDate"),
        observations=of_encounter("Observation", "effectiveDateTime"),
        medication_requests=of_encounter("MedicationRequest", "authoredOn"),
        procedures=of_encounter("Procedure", "performedDateTime"),
        other_encounters=[e for e in encounters if e.id != current.id],
        supplied=frozenset(supplied),
        coverages=tuple(m for m, _ in by_type["Coverage"]),
    )


def _current_encounter(encounters: list[Any], encounter_id: Any) -> Any:
    if isinstance(encounter_id, str) and encounter_id:
        return next((e for e in encounters if e.id == encounter_id), None)
    inpatient = [
        (start, e)
        for e in encounters
        if encounter_class(e) in INPATIENT_CLASSES
        and e.period is not None
        and (start := as_utc(e.period.start)) is not None
    ]
    return max(inpatient, key=lambda pair: pair[0], default=(None, None))[1]


def _belongs(model: Any, urls: Mapping[str, str], encounter: Any, when: str) -> bool:
    """Of this encounter: by its encounter reference, or, without one, by its time."""
    ref = getattr(model, "encounter", None)
    if ref is not None and getattr(ref, "reference", None):
        return reference_id(ref, "Encounter", urls) == encounter.id
    stamp = as_utc(getattr(model, when, None))
    if stamp is None or encounter.period is None:
        return False
    start, end = as_utc(encounter.period.start), as_utc(encounter.period.end)
    return start is not None and start <= stamp and (end is None or stamp <= end)
