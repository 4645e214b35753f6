"""The model's clinical inputs, read from a FHIR record: the diagnoses (their count and the
primary one as ICD-9-CM), the HbA1c and glucose results in the model's bands, and the
medications (their count and the diabetes drugs' direction: Up, Down, Steady or No)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from hospital_mlops.ehr.fhir_datatypes import as_utc, codings_of, iso_utc, reference_id
from hospital_mlops.ehr.fhir_input_reader import InputReader, Unmapped
from hospital_mlops.features import MEDICATIONS
from hospital_mlops.model.scoring import OBSERVATION_TIMES

HBA1C_MMOL_PER_PERCENT = 10.929  # NGSP % = mmol/mol / 10.929 + 2.15 (the master equation)
GLUCOSE_MG_PER_MMOL = 18.016


def read_diagnoses(reader: InputReader) -> None:
    """The number of diagnoses and the primary one (``diag_1``) as ICD-9-CM."""
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
        ident = reference_id(d.condition, "Condition", {})
        if ident in by_id:
            ranked.append((d.rank if d.rank is not None else math.inf, by_id[ident]))
    if ranked:
        return min(ranked, key=lambda x: x[0])[1]
    return conditions[0] if conditions else None


def _icd9_of(reader: InputReader, condition: Any) -> str | None:
    d = reader.m.diagnosis

    def snomed(code: str) -> str | None:
        entry = d.snomed.get(code)
        return entry.icd9 if entry is not None else None

    codings = codings_of(condition.code)
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
    # coded only in systems the mapping does not know: scored without it (the model's
    # "missing" diagnosis group), named with the system found
    system, code = codings[0] if codings else ("(no coding)", "")
    reader.out.unmapped.append(Unmapped("diag_1", system or "(no system)", code))
    return None


def read_labs(reader: InputReader) -> None:
    """The latest HbA1c and the highest glucose of the stay, in the extract's bands."""
    out = reader.out
    if "Observation" not in reader.r.supplied:
        out.missing += ["A1Cresult", "max_glu_serum"]
        return
    labs = reader.m.labs
    a1c: list[tuple[datetime, float]] = []
    glucose: list[tuple[datetime, float]] = []
    for o in reader.r.observations:
        codes = {code for system, code in codings_of(o.code) if system == labs.loinc_system}
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
        times["A1Cresult"] = iso_utc(when)
    else:
        out.instance["A1Cresult"] = "None"  # the extract's own value: not measured
    if glucose:
        highest = max(v for _, v in glucose)
        out.instance["max_glu_serum"] = (
            ">300" if highest > 300 else ">200" if highest > 200 else "Norm"
        )
        times["max_glu_serum"] = iso_utc(max(t for t, _ in glucose))
    else:
        out.instance["max_glu_serum"] = "None"


def _quantity(
    reader: InputReader, o: Any, units: tuple[str, ...], what: str
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
    when = as_utc(o.effectiveDateTime) or as_utc(getattr(o, "issued", None))
    if when is None:
        reader.problems.append((where, f"{what} result has no effectiveDateTime"))
        return None
    reader.times.append(when)
    return when, value


def read_medications(reader: InputReader) -> None:
    """The number of distinct medications, each diabetes drug's direction, change and
    diabetesMed."""
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
        codings = codings_of(m.medicationCodeableConcept)
        if not codings:
            ref = getattr(m.medicationReference, "reference", None)
            distinct.add(("reference", ref or m.id or ""))
            continue
        rx = [code for system, code in codings if system == meds.rxnorm_system]
        if not rx:
            # a medication all the same (counted); whether it is a diabetes drug is unknown
            system, code = codings[0]
            distinct.add((system, code))
            reader.out.unmapped.append(
                Unmapped("diabetes medications", system or "(no system)", code)
            )
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
    prior = by_id.get(reference_id(request.priorPrescription, "MedicationRequest", {}))
    new, old = _dose(request), _dose(prior) if prior is not None else None
    if new is None or old is None or new == old:
        return "Steady"
    return "Up" if new > old else "Down"
