"""The model's inputs about the stay itself, read from a FHIR record: its length (to discharge,
or to now while the patient is in), the discharge disposition, and the counts of procedures
and lab tests."""

from __future__ import annotations

from typing import Any

from hospital_mlops.ehr.fhir_datatypes import as_utc, iso_utc
from hospital_mlops.ehr.fhir_input_reader import RANGES, InputReader
from hospital_mlops.model.scoring import OBSERVATION_TIMES


def read_stay_length(reader: InputReader) -> bool:
    """``time_in_hospital`` in days; False (a problem recorded) when the stay has no start."""
    enc = reader.r.encounter
    where = f"Encounter/{enc.id}"
    if enc.period is None or enc.period.start is None:
        reader.problems.append((where, "has no period.start: the length of stay is unknown"))
        return False
    start = as_utc(enc.period.start)
    end = as_utc(enc.period.end) or reader.now  # at discharge, the stay ends now
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
    reader.out.instance.setdefault(OBSERVATION_TIMES, {})["time_in_hospital"] = iso_utc(end)
    return True


def read_discharge_and_stay_counts(reader: InputReader) -> None:
    """The discharge disposition, and the procedures and lab tests of the stay."""
    enc, m = reader.r.encounter, reader.m
    at = f"Encounter/{enc.id}.hospitalization"
    discharged = getattr(enc.hospitalization, "dischargeDisposition", None)
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
