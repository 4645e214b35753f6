"""The model's inputs known at admission, read from a FHIR record: demographics (age band at
the encounter's start, gender, race with US Core's OMB categories), the admission's type and
source, the prior encounters by kind within the mapping's lookback, and (the admission model's
optional inputs) the payer from the patient's active Coverage and the admitting service from
the encounter's serviceType.

The readmission model reads these as part of its inputs (``fhir_readmission_inputs``); the
post-acute model, predicted at admission, reads only these (``admission_model_inputs``): one
reading of each input, shared, never copied."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from hospital_mlops.ehr.fhir_datatypes import (
    EMERGENCY_CLASSES,
    INPATIENT_CLASSES,
    OUTPATIENT_CLASSES,
    as_utc,
    encounter_class,
)
from hospital_mlops.ehr.fhir_input_reader import InputReader, ModelInputs
from hospital_mlops.ehr.fhir_mapping import FhirMapping
from hospital_mlops.ehr.fhir_record import PRIOR_VISITS, PatientRecord
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS

RACE_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race"
ETHNICITY_URL = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity"


def read_demographics(reader: InputReader) -> None:
    """The age band at the encounter's start, the gender and the race."""
    patient, out = reader.r.patient, reader.out
    where = f"Patient/{patient.id}"
    birth = patient.birthDate
    if birth is None:
        reader.problems.append((where, "has no birthDate: the model needs the age"))
    else:
        born = birth if isinstance(birth, date) else date(int(str(birth)[:4]), 7, 1)
        start = as_utc(reader.r.encounter.period.start) if reader.r.encounter.period else None
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


def read_admission_codes(reader: InputReader) -> None:
    """The admission's type (Encounter.priority) and source (hospitalization.admitSource)."""
    enc, m = reader.r.encounter, reader.m
    where = f"Encounter/{enc.id}"
    hosp = enc.hospitalization
    reader.coded("admission_type_id", enc.priority, m.admission_type, f"{where}.priority")
    at = f"{where}.hospitalization"
    admitted = getattr(hosp, "admitSource", None)
    reader.coded("admission_source_id", admitted, m.admission_source, f"{at}.admitSource")


def read_prior_encounters(reader: InputReader) -> None:
    """Outpatient, emergency and inpatient visits ended before this admission within the
    lookback, and every earlier inpatient stay."""
    enc, lookback = reader.r.encounter, timedelta(days=reader.m.lookback_days)
    start = as_utc(enc.period.start) if enc.period else None
    if start is None:
        return
    counts = {"number_outpatient": 0, "number_emergency": 0, "number_inpatient": 0}
    earlier_inpatient = 0
    for other in reader.r.other_encounters:
        ended = as_utc(other.period.end or other.period.start) if other.period else None
        if ended is None or ended >= start:
            continue  # only what ended before this admission: no future leaks in
        cls = encounter_class(other)
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


def read_payer(reader: InputReader) -> None:
    """The payer of the coverage in force at admission: an active Coverage whose period holds
    the encounter's start, the first by ``order`` (primary before secondary). Not supplied, or
    none in force: missing (an unknown payer, as the extract's "?")."""
    if "Coverage" not in reader.r.supplied:
        reader.out.missing.append("payer_code")
        return
    enc = reader.r.encounter
    start = as_utc(enc.period.start) if enc.period else None
    at = start or reader.now
    in_force = [c for c in reader.r.coverages if c.status == "active" and _holds(c.period, at)]
    if not in_force:
        reader.out.missing.append("payer_code")
        return
    first = min(in_force, key=lambda c: (c.order is None, c.order or 0))
    reader.coded_text("payer_code", first.type, reader.m.payer)


def _holds(period: Any, at: datetime) -> bool:
    if period is None:
        return True
    begins, ends = as_utc(period.start), as_utc(period.end)
    return (begins is None or begins <= at) and (ends is None or at <= ends)


def read_admitting_specialty(reader: InputReader) -> None:
    """The admitting service (Encounter.serviceType, coded with the NUCC provider taxonomy) for
    the extract's admitting physician's specialty."""
    enc = reader.r.encounter
    reader.coded_text("medical_specialty", enc.serviceType, reader.m.admitting_specialty)


# the admission model cannot be scored without these; payer and admitting specialty are optional
# inputs (the extract lacks them for half its stays): missing, they are reported and the model
# scores them as its "missing" category, as it learnt
ADMISSION_NEEDED = frozenset(
    {"age", "gender", "number_outpatient", "number_emergency", "number_inpatient", PRIOR_ENCOUNTERS}
)


def admission_model_inputs(
    record: PatientRecord, mapping: FhirMapping, now: datetime | None = None
) -> ModelInputs:
    """The post-acute model's v1 instance at admission: nothing recorded during the stay is
    read. Raises ``FhirInputError`` for what cannot be read at all."""
    reader = InputReader(mapping, record, now or datetime.now(UTC))
    read_demographics(reader)
    read_admission_codes(reader)
    read_prior_encounters(reader)
    read_payer(reader)
    read_admitting_specialty(reader)
    out = reader.result()
    out.needed = ADMISSION_NEEDED
    return out
