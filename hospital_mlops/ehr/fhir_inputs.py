"""FHIR R4 resources → exactly the inputs the readmission model was trained on.

``gather`` takes a CDS Hooks prefetch (single resources, searchset Bundles, or one ``bundle`` key
holding a whole patient Bundle of any type), validates every resource it reads with
``fhir.resources`` (its R4B models: identical to R4 for the resource types read here), and checks
that they are one patient's. ``model_inputs`` computes the predictor's v1 instance with the
mapping of ``config/fhir_mapping.yaml``. Anything it cannot map is reported as missing,
unmapped or out of range, never silently defaulted; what cannot be read at all is refused
(``FhirInputError``, a 400 naming the resource and the problem). Pure: no HTTP here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import ValidationError

from hospital_mlops.ehr.fhir_mapping import CodeMap, FhirMapping
from hospital_mlops.features import MEDICATIONS
from hospital_mlops.model.scoring import OBSERVATION_TIMES, PRIOR_ENCOUNTERS

USED_TYPES = ("Patient", "Encounter", "Condition", "Observation", "MedicationRequest", "Procedure")
# The prefetch keys the service declares, and the resource type each one supplies.
PREFETCH_TYPES = {
    "patient": "Patient",
    "encounter": "Encounter",
    "conditions": "Condition",
    "observations": "Observation",
    "medications": "MedicationRequest",
    "procedures": "Procedure",
    "priorEncounters": "PriorEncounters",  # the visit history: not implied by the encounter key
}
BUNDLE_KEY = "bundle"
PRIOR_VISITS = "PriorEncounters"  # supplied by the priorEncounters key or a whole Bundle
MAX_RESOURCES = 5000
RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"
OUTPATIENT_CLASSES = {"AMB", "VR", "HH", "OBSENC", "PRENC", "SS"}
EMERGENCY_CLASSES = {"EMER"}
INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC"}
HBA1C_MMOL_PER_PERCENT = 10.929  # NGSP % = mmol/mol / 10.929 + 2.15 (the master equation)
GLUCOSE_MG_PER_MMOL = 18.016
# the trained range of the counts (config/catalog.yaml): outside it the model is not used
RANGES = {
    "time_in_hospital": (1, 14),
    "num_lab_procedures": (1, 200),
    "num_procedures": (0, 10),
    "num_medications": (0, 120),
    "number_outpatient": (0, 100),
    "number_emergency": (0, 100),
    "number_inpatient": (0, 50),
    "number_diagnoses": (1, 20),
}
# Health Facts codes the extract used when a source system sent nothing or an unmapped code
NOT_AVAILABLE = {"admission_type_id": 5, "admission_source_id": 9, "discharge_disposition_id": 18}
NOT_MAPPED = {"admission_type_id": 8, "admission_source_id": 20, "discharge_disposition_id": 25}


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


@dataclass(frozen=True)
class Unmapped:
    input: str
    system: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"input": self.input, "system": self.system, "code": self.code}


@dataclass
class ModelInputs:
    instance: dict[str, Any]
    missing: list[str] = field(default_factory=list)  # not in the record: reported
    unmapped: list[Unmapped] = field(default_factory=list)  # a known system, an unlisted code
    out_of_range: list[str] = field(default_factory=list)  # outside what the model was trained on
    data_start: datetime | None = None  # the earliest and newest data times read
    data_end: datetime | None = None

    @property
    def scorable(self) -> bool:
        required = {"age", "gender", "time_in_hospital", "num_lab_procedures", "number_diagnoses"}
        counted = {
            "num_procedures", "num_medications", "number_outpatient", "number_emergency",
            "number_inpatient", PRIOR_ENCOUNTERS,
        }  # fmt: skip
        return not self.out_of_range and not (set(self.missing) & (required | counted))

    def why_not_scored(self) -> list[str]:
        return [f"{name}: not in the record" for name in self.missing] + self.out_of_range


# --- gathering the record -----------------------------------------------------------------------


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


def _ref_id(reference: Any, kind: str, urls: Mapping[str, str]) -> str | None:
    """The id a Reference points at when it is a ``kind``, resolving bundle fullUrls."""
    text = getattr(reference, "reference", None) if reference is not None else None
    if not text:
        return None
    text = urls.get(text, text)
    head, _, ident = text.rpartition("/")
    if head.endswith(kind) and ident:
        return ident
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
        elif key in PREFETCH_TYPES and value is not None:
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
            subject = getattr(model, "subject", None)
            if _ref_id(subject, "Patient", urls) != patient_id:
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
    )


def _current_encounter(encounters: list[Any], encounter_id: Any) -> Any:
    if isinstance(encounter_id, str) and encounter_id:
        return next((e for e in encounters if e.id == encounter_id), None)
    inpatient = [
        (start, e)
        for e in encounters
        if _class_code(e) in INPATIENT_CLASSES
        and e.period is not None
        and (start := _utc(e.period.start)) is not None
    ]
    return max(inpatient, key=lambda pair: pair[0], default=(None, None))[1]


def _belongs(model: Any, urls: Mapping[str, str], encounter: Any, when: str) -> bool:
    """Of this encounter: by its encounter reference, or, without one, by its time."""
    ref = getattr(model, "encounter", None)
    if ref is not None and getattr(ref, "reference", None):
        return _ref_id(ref, "Encounter", urls) == encounter.id
    stamp = _utc(getattr(model, when, None))
    if stamp is None or encounter.period is None:
        return False
    start, end = _utc(encounter.period.start), _utc(encounter.period.end)
    return start is not None and start <= stamp and (end is None or stamp <= end)


# --- computing the inputs -----------------------------------------------------------------------


def _utc(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    return None


def _class_code(encounter: Any) -> str | None:
    cls = getattr(encounter, "class_fhir", None)
    return getattr(cls, "code", None)


def _codings(concept: Any) -> list[tuple[str, str]]:
    return [
        (c.system or "", c.code or "") for c in (getattr(concept, "coding", None) or []) if c.code
    ]


class _Reader:
    def __init__(self, mapping: FhirMapping, record: PatientRecord, now: datetime) -> None:
        self.m = mapping
        self.r = record
        self.now = now
        self.out = ModelInputs(instance={})
        self.problems: list[tuple[str, str]] = []
        self.times: list[datetime] = []

    def coded(self, name: str, concept: Any, maps: tuple[CodeMap, ...], where: str) -> None:
        codings = _codings(concept)
        if not codings:
            self.out.instance[name] = NOT_AVAILABLE[name]
            self.out.missing.append(name)
            return
        for table in maps:
            known = [code for system, code in codings if system == table.system]
            if not known:
                continue
            if known[0] in table.codes:
                self.out.instance[name] = table.codes[known[0]]
            else:
                self.out.instance[name] = NOT_MAPPED[name]
                self.out.unmapped.append(Unmapped(name, table.system, known[0]))
            return
        systems = sorted({s or "(no system)" for s, _ in codings})
        expected = ", ".join(t.system for t in maps)
        self.problems.append(
            (where, f"coded only in unknown systems {systems}; expected {expected}")
        )

    def count(self, name: str, kind: str, value: int) -> None:
        if kind not in self.r.supplied:
            self.out.missing.append(name)
            return
        low, high = RANGES[name]
        self.out.instance[name] = value
        if not low <= value <= high:
            self.out.out_of_range.append(
                f"{name}: {value} is outside the range the model was trained on ({low}–{high})"
            )


def model_inputs(
    record: PatientRecord, mapping: FhirMapping, now: datetime | None = None
) -> ModelInputs:
    """The predictor's v1 instance for the record's current encounter, with what is missing,
    unmapped or out of range. Raises ``FhirInputError`` for what cannot be read at all."""
    now = now or datetime.now(UTC)
    reader = _Reader(mapping, record, now)
    _demographics(reader)
    _encounter(reader)
    _history(reader)
    _diagnoses(reader)
    _labs(reader)
    _medications(reader)
    if reader.problems:
        raise FhirInputError(reader.problems)
    out = reader.out
    if reader.times:
        out.data_start, out.data_end = min(reader.times), max(reader.times)
    return out


def _demographics(reader: _Reader) -> None:
    patient, out = reader.r.patient, reader.out
    where = f"Patient/{patient.id}"
    birth = patient.birthDate
    if birth is None:
        reader.problems.append((where, "has no birthDate: the model needs the age"))
    else:
        born = birth if isinstance(birth, date) else date(int(str(birth)[:4]), 7, 1)
        start = _utc(reader.r.encounter.period.start) if reader.r.encounter.period else None
        at = (start or reader.now).date()
        age = at.year - born.year - ((at.month, at.day) < (born.month, born.day))
        if age < 0 or age >= 100:
            out.out_of_range.append(f"age: {age} years is outside the model's bands (0–99)")
        else:
            out.instance["age"] = f"[{age // 10 * 10}-{age // 10 * 10 + 10})"
    gender = reader.m.gender.get(patient.gender or "")
    if gender is None:
        out.missing.append("gender")
    else:
        out.instance["gender"] = gender
    race = _race(patient, reader.m)
    out.instance["race"] = race
    if race is None:
        out.missing.append("race")


def _race(patient: Any, mapping: FhirMapping) -> str | None:
    ethnicity, race = None, None
    for ext in patient.extension or []:
        for part in ext.extension or []:
            coding = getattr(part, "valueCoding", None)
            if part.url != "ombCategory" or coding is None:
                continue
            if ext.url == ETHNICITY_URL and coding.code == mapping.race.hispanic_ethnicity:
                ethnicity = "Hispanic"
            elif ext.url == RACE_URL and race is None:
                race = mapping.race.omb.get(coding.code or "")
    return ethnicity or race


def _encounter(reader: _Reader) -> None:
    enc, m = reader.r.encounter, reader.m
    where = f"Encounter/{enc.id}"
    if enc.period is None or enc.period.start is None:
        reader.problems.append((where, "has no period.start: the length of stay is unknown"))
        return
    start = _utc(enc.period.start)
    end = _utc(enc.period.end) or reader.now  # at discharge, the stay ends now
    assert start is not None
    reader.times += [start, end]
    days = max((end.date() - start.date()).days, 1)
    low, high = RANGES["time_in_hospital"]
    reader.out.instance["time_in_hospital"] = days
    if not low <= days <= high:
        reader.out.out_of_range.append(
            f"time_in_hospital: {days} days is outside the range the model was trained on "
            f"({low}–{high})"
        )
    reader.out.instance.setdefault(OBSERVATION_TIMES, {})["time_in_hospital"] = _iso(end)
    hosp = enc.hospitalization
    reader.coded("admission_type_id", enc.priority, m.admission_type, f"{where}.priority")
    at = f"{where}.hospitalization"
    admitted = getattr(hosp, "admitSource", None)
    discharged = getattr(hosp, "dischargeDisposition", None)
    reader.coded("admission_source_id", admitted, m.admission_source, f"{at}.admitSource")
    reader.coded(
        "discharge_disposition_id",
        discharged,
        m.discharge_disposition,
        f"{at}.dischargeDisposition",
    )
    done = [p for p in reader.r.procedures if p.status != "entered-in-error"]
    reader.count("num_procedures", "Procedure", len(done))
    labs = [o for o in reader.r.observations if _is_lab(o) and o.status != "entered-in-error"]
    reader.count("num_lab_procedures", "Observation", len(labs))


def _is_lab(observation: Any) -> bool:
    return any(
        c.code == "laboratory" for cat in observation.category or [] for c in cat.coding or []
    )


def _history(reader: _Reader) -> None:
    enc, lookback = reader.r.encounter, timedelta(days=reader.m.lookback_days)
    start = _utc(enc.period.start) if enc.period else None
    if start is None:
        return
    counts = {"number_outpatient": 0, "number_emergency": 0, "number_inpatient": 0}
    earlier_inpatient = 0
    for other in reader.r.other_encounters:
        ended = _utc(other.period.end or other.period.start) if other.period else None
        if ended is None or ended >= start:
            continue  # only what ended before this admission: no future leaks in
        cls = _class_code(other)
        if cls in INPATIENT_CLASSES:
            earlier_inpatient += 1
        if ended < start - lookback:
            continue
        if cls in OUTPATIENT_CLASSES:
            counts["number_outpatient"] += 1
        elif cls in EMERGENCY_CLASSES:
            counts["number_emergency"] += 1
        elif cls in INPATIENT_CLASSES:
            counts["number_inpatient"] += 1
    for name, value in counts.items():
        reader.count(name, PRIOR_VISITS, value)
    if PRIOR_VISITS in reader.r.supplied:
        reader.out.instance[PRIOR_ENCOUNTERS] = earlier_inpatient
    else:
        reader.out.missing.append(PRIOR_ENCOUNTERS)


def _diagnoses(reader: _Reader) -> None:
    conditions = [
        c for c in reader.r.conditions
        if getattr(c.verificationStatus, "coding", None) is None
        or all(x.code != "entered-in-error" for x in c.verificationStatus.coding)
    ]  # fmt: skip
    reader.count("number_diagnoses", "Condition", len(conditions))
    if "Condition" not in reader.r.supplied:
        reader.out.instance["diag_1"] = None
        return
    primary = _primary(reader.r.encounter, conditions)
    if primary is None:
        reader.out.instance["diag_1"] = None
        reader.out.missing.append("diag_1")
        return
    reader.out.instance["diag_1"] = _icd9_of(reader, primary)


def _primary(encounter: Any, conditions: list[Any]) -> Any:
    """Encounter.diagnosis ranked 1 (or the best ranked), else the first Condition."""
    by_id = {c.id: c for c in conditions}
    ranked = []
    for d in encounter.diagnosis or []:
        ident = _ref_id(d.condition, "Condition", {})
        if ident in by_id:
            ranked.append((d.rank if d.rank is not None else math.inf, by_id[ident]))
    if ranked:
        return min(ranked, key=lambda x: x[0])[1]
    return conditions[0] if conditions else None


def _icd9_of(reader: _Reader, condition: Any) -> str | None:
    d = reader.m.diagnosis

    def snomed(code: str) -> str | None:
        entry = d.snomed.get(code)
        return entry.icd9 if entry is not None else None

    codings = _codings(condition.code)
    # in order of preference: the model's own ICD-9-CM, then ICD-10-CM, then SNOMED CT
    lookups = (
        (d.icd9_system, str),
        (d.icd10_system, reader.m.icd10_to_icd9),
        (d.snomed_system, snomed),
    )
    for wanted, lookup in lookups:
        for system, code in codings:
            if system == wanted:
                mapped = lookup(code)
                if mapped is None:
                    reader.out.unmapped.append(Unmapped("diag_1", system, code))
                return mapped
    systems = sorted({s or "(no system)" for s, _ in codings}) or ["(no coding)"]
    reader.problems.append((
        f"Condition/{condition.id}.code",
        f"coded only in unknown systems {systems}; expected ICD-10-CM, ICD-9-CM or SNOMED CT",
    ))  # fmt: skip
    return None


def _labs(reader: _Reader) -> None:
    out = reader.out
    if "Observation" not in reader.r.supplied:
        out.missing += ["A1Cresult", "max_glu_serum"]
        return
    labs = reader.m.labs
    a1c: list[tuple[datetime, float]] = []
    glucose: list[tuple[datetime, float]] = []
    for o in reader.r.observations:
        codes = {code for system, code in _codings(o.code) if system == labs.loinc_system}
        if codes & set(labs.hba1c.codes):
            value = _quantity(reader, o, labs.hba1c.units, "HbA1c")
            if value is not None:
                a1c.append(value)
        elif codes & set(labs.glucose.codes):
            value = _quantity(reader, o, labs.glucose.units, "glucose")
            if value is not None:
                glucose.append(value)
    times = out.instance.setdefault(OBSERVATION_TIMES, {})
    if a1c:
        when, percent = max(a1c)  # the latest result of the stay
        out.instance["A1Cresult"] = ">8" if percent >= 8 else ">7" if percent >= 7 else "Norm"
        times["A1Cresult"] = _iso(when)
    else:
        out.instance["A1Cresult"] = "None"  # the extract's own value: not measured
    if glucose:
        highest = max(v for _, v in glucose)
        out.instance["max_glu_serum"] = (
            ">300" if highest > 300 else ">200" if highest > 200 else "Norm"
        )
        times["max_glu_serum"] = _iso(max(t for t, _ in glucose))
    else:
        out.instance["max_glu_serum"] = "None"


def _quantity(
    reader: _Reader, o: Any, units: tuple[str, ...], what: str
) -> tuple[datetime, float] | None:
    q = o.valueQuantity
    where = f"Observation/{o.id}"
    if q is None or q.value is None:
        return None  # e.g. a cancelled test: no value, nothing to read
    unit = q.code or q.unit or ""
    if unit not in units:
        reader.problems.append(
            (where, f"{what} in unit {unit!r}; the mapping accepts {', '.join(units)}")
        )
        return None
    value = float(q.value)
    if unit == "mmol/mol":
        value = value / HBA1C_MMOL_PER_PERCENT + 2.15
    elif unit == "mmol/L":
        value = value * GLUCOSE_MG_PER_MMOL
    when = _utc(o.effectiveDateTime) or _utc(getattr(o, "issued", None))
    if when is None:
        reader.problems.append((where, f"{what} result has no effectiveDateTime"))
        return None
    reader.times.append(when)
    return when, value


def _medications(reader: _Reader) -> None:
    out = reader.out
    if "MedicationRequest" not in reader.r.supplied:
        out.missing += ["num_medications", "diabetesMed", *MEDICATIONS]
        return
    meds = reader.m.medications
    requests = [m for m in reader.r.medication_requests if m.status not in ("entered-in-error",)]
    distinct: set[tuple[str, str]] = set()
    columns = dict.fromkeys(MEDICATIONS, "No")
    by_id = {m.id: m for m in requests}
    for m in requests:
        codings = _codings(m.medicationCodeableConcept)
        if not codings:
            ref = getattr(m.medicationReference, "reference", None)
            distinct.add(("reference", ref or m.id or ""))
            continue
        rx = [code for system, code in codings if system == meds.rxnorm_system]
        if not rx:
            systems = sorted({s or "(no system)" for s, _ in codings})
            reader.problems.append((
                f"MedicationRequest/{m.id}.medicationCodeableConcept",
                f"coded only in unknown systems {systems}; expected RxNorm",
            ))  # fmt: skip
            continue
        distinct.add((meds.rxnorm_system, rx[0]))
        column = meds.ingredients.get(rx[0])
        if column is not None and columns[column] in ("No", "Steady"):
            columns[column] = _direction(m, by_id)  # a dose change wins over the order it came in
    reader.count("num_medications", "MedicationRequest", len(distinct))
    out.instance.update(columns)
    changed = any(v in ("Up", "Down") for v in columns.values())
    out.instance["change"] = "Ch" if changed else "No"
    out.instance["diabetesMed"] = "Yes" if any(v != "No" for v in columns.values()) else "No"


def _dose(request: Any) -> float | None:
    for dosage in request.dosageInstruction or []:
        for rate in dosage.doseAndRate or []:
            if rate.doseQuantity is not None and rate.doseQuantity.value is not None:
                return float(rate.doseQuantity.value)
    return None


def _direction(request: Any, by_id: Mapping[str | None, Any]) -> str:
    """Up or Down when the request names the prescription it replaces and both carry a dose;
    otherwise Steady (the drug was given at a dose the record does not compare)."""
    prior = by_id.get(_ref_id(request.priorPrescription, "MedicationRequest", {}))
    new, old = _dose(request), _dose(prior) if prior is not None else None
    if new is None or old is None or new == old:
        return "Steady"
    return "Up" if new > old else "Down"


def _iso(when: datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")
