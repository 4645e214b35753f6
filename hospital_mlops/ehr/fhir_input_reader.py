"""What reading a record for the model gives, and the reader the input readers share.

``ModelInputs`` is the model's instance with what is missing, unmapped or out of range;
``InputReader`` holds one reading (the mapping, the record, the time, the inputs so far, the
problems that make the record unreadable, the data times read) and reads a coded input (a code
map's value, else the extract's own not-available / not-mapped code) and a count (checked
against the range the model was trained on)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hospital_mlops.ehr.fhir_datatypes import canonical_systems, codings_of
from hospital_mlops.ehr.fhir_mapping import CodeMap, FhirMapping, TextCodes
from hospital_mlops.ehr.fhir_record import FhirInputError, PatientRecord
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS

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


@dataclass(frozen=True)
class Unmapped:
    input: str
    system: str
    code: str

    def as_dict(self) -> dict[str, str]:
        return {"input": self.input, "system": self.system, "code": self.code}


# what the readmission model cannot be scored without (the counts are meaningless unless the
# EHR supplied the resources they count)
DISCHARGE_NEEDED = frozenset(
    {
        "age", "gender", "time_in_hospital", "num_lab_procedures", "number_diagnoses",
        "num_procedures", "num_medications", "number_outpatient", "number_emergency",
        "number_inpatient", PRIOR_ENCOUNTERS,
    }
)  # fmt: skip


@dataclass
class ModelInputs:
    instance: dict[str, Any]
    missing: list[str] = field(default_factory=list)  # not in the record: reported
    unmapped: list[Unmapped] = field(default_factory=list)  # a known system, an unlisted code
    out_of_range: list[str] = field(default_factory=list)  # outside what the model was trained on
    data_start: datetime | None = None  # the earliest and newest data times read
    data_end: datetime | None = None
    needed: frozenset[str] = DISCHARGE_NEEDED  # missing any of these, the model is not used
    patient_id: str | None = None  # the record's (a card's suggestion names them)
    encounter_id: str | None = None
    # alias system URIs the record used, each read as its canonical system (config's list)
    aliases_read: list[str] = field(default_factory=list)

    @property
    def scorable(self) -> bool:
        return not self.out_of_range and not (set(self.missing) & self.needed)

    def why_not_scored(self) -> list[str]:
        return [f"{name}: not in the record" for name in self.missing] + self.out_of_range


class InputReader:
    """One reading of a record: the mapping (``m``), the record (``r``), the time, the inputs so
    far (``out``), the problems that make the record unreadable, and the data times read."""

    def __init__(self, mapping: FhirMapping, record: PatientRecord, now: datetime) -> None:
        self.m = mapping
        self.r = record
        self.now = now
        self.out = ModelInputs(
            instance={}, patient_id=record.patient.id, encounter_id=record.encounter.id
        )
        self.problems: list[tuple[str, str]] = []
        self.times: list[datetime] = []
        seen: set[str] = set()
        r = record
        for part in (
            r.patient,
            r.encounter,
            r.conditions,
            r.observations,
            r.medication_requests,
            r.procedures,
            r.other_encounters,
            r.coverages,
        ):
            canonical_systems(part, mapping.aliases, seen)  # fmt: skip
        self.out.aliases_read = [f"{a} as {mapping.aliases[a]}" for a in sorted(seen)]

    def result(self) -> ModelInputs:
        """What the reading gave, with the data's time window; ``FhirInputError`` naming every
        problem when the record could not be read."""
        if self.problems:
            raise FhirInputError(self.problems)
        if self.times:
            self.out.data_start, self.out.data_end = min(self.times), max(self.times)
        return self.out

    def coded(self, name: str, concept: Any, maps: tuple[CodeMap, ...], where: str) -> None:
        """A coded input by the first code map whose system the concept uses."""
        codings = codings_of(concept)
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
        # a system neither the mapping nor its aliases know: the input is read as the extract's
        # own "not mapped" code (the model knows it), named with the system found, never a 400
        system, code = codings[0]
        self.out.instance[name] = NOT_MAPPED[name]
        self.out.unmapped.append(Unmapped(name, system or "(no system)", code))

    def coded_text(self, name: str, concept: Any, codes: TextCodes | None) -> None:
        """An optional coded input the extract holds as text. Not in the record: missing. In a
        known system, by its table (an unlisted code stands as ``codes.other``, reported
        unmapped). Coded only in other systems: stands as ``codes.other``, reported unmapped
        with the system found: an optional input never makes the record unreadable."""
        codings = codings_of(concept)
        if codes is None or not codings:
            self.out.missing.append(name)
            return
        for table in codes.systems:
            known = [code for system, code in codings if system == table.system]
            if known:
                if known[0] in table.codes:
                    self.out.instance[name] = table.codes[known[0]]
                else:
                    self.out.instance[name] = codes.other
                    self.out.unmapped.append(Unmapped(name, table.system, known[0]))
                return
        system, code = codings[0]
        self.out.instance[name] = codes.other
        self.out.unmapped.append(Unmapped(name, system or "(no system)", code))

    def count(self, name: str, kind: str, value: int) -> None:
        """A count of a resource type: missing when the EHR did not supply that type."""
        if kind not in self.r.supplied:
            self.out.missing.append(name)
            return
        low, high = RANGES[name]
        self.out.instance[name] = value
        if not low <= value <= high:
            self.out.out_of_range.append(
                f"{name}: {value} is outside the range the model was trained on ({low}–{high})"
            )
