"""``config/fhir_mapping.yaml``: which FHIR code becomes which of the model's input codes,
validated at load (a wrong key fails with its path)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.features import ICD9_GROUPS, MEDICATIONS, icd9_group_of
from hospital_mlops.paths import config_path

Gender = Literal["Male", "Female", "Unknown/Invalid"]
Race = Literal["Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"]


class FhirMappingError(ValueError):
    pass


class RaceMap(StrictModel):
    omb: dict[str, Race] = Field(min_length=1)
    hispanic_ethnicity: str


class CodeMap(StrictModel):
    """One code system's codes → the extract's code."""

    system: str = Field(min_length=1)
    codes: dict[str, int] = Field(min_length=1)


class TextCodeMap(StrictModel):
    """One code system's codes → the extract's text value."""

    system: str = Field(min_length=1)
    codes: dict[str, str] = Field(min_length=1)


class TextCodes(StrictModel):
    """An optional input the extract holds as text: each system's codes (in order of
    preference), and the extract's value a code outside them stands as (the feature's
    "other"); the source of the systems' codes, for a reviewer."""

    other: str = Field(min_length=1)
    systems: tuple[TextCodeMap, ...] = Field(min_length=1)


class Icd10Range(StrictModel):
    from_: str = Field(alias="from", pattern=r"^[A-Z][0-9]{2}$")
    to: str = Field(pattern=r"^[A-Z][0-9]{2}$")
    icd9: str
    group: str

    @model_validator(mode="after")
    def _consistent(self) -> Icd10Range:
        if self.from_ > self.to:
            raise ValueError(f"{self.from_}..{self.to} is empty")
        if self.group not in ICD9_GROUPS or icd9_group_of(self.icd9) != self.group:
            raise ValueError(
                f"representative ICD-9 {self.icd9} is in group {icd9_group_of(self.icd9)}, "
                f"not {self.group}"
            )
        return self


class SnomedEntry(StrictModel):
    icd9: str
    display: str


class DiagnosisMap(StrictModel):
    icd9_system: str
    icd10_system: str
    snomed_system: str
    icd10_ranges: tuple[Icd10Range, ...] = Field(min_length=1)
    snomed: dict[str, SnomedEntry]


class LabCodes(StrictModel):
    codes: tuple[str, ...] = Field(min_length=1)
    units: tuple[str, ...] = Field(min_length=1)


class LabMap(StrictModel):
    loinc_system: str
    hba1c: LabCodes
    glucose: LabCodes

    @model_validator(mode="after")
    def _known_units(self) -> LabMap:
        if set(self.hba1c.units) - {"%", "mmol/mol"}:
            raise ValueError("hba1c units: only % and mmol/mol are converted")
        if set(self.glucose.units) - {"mg/dL", "mmol/L"}:
            raise ValueError("glucose units: only mg/dL and mmol/L are converted")
        return self


class MedicationMap(StrictModel):
    rxnorm_system: str
    ingredients: dict[str, str] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_columns(self) -> MedicationMap:
        unknown = sorted(set(self.ingredients.values()) - set(MEDICATIONS))
        if unknown:
            raise ValueError(f"not medication columns of the model: {unknown}")
        return self


class SystemAlias(StrictModel):
    """An older or alternative URI of a code system the mapping reads, as real exports write
    it, with where that spelling comes from."""

    alias: str = Field(min_length=1)
    canonical: str = Field(min_length=1)
    source: str = Field(min_length=10)


class FhirMapping(StrictModel):
    version: str
    lookback_days: int = Field(ge=1, le=3650)
    race: RaceMap
    gender: dict[str, Gender]
    admission_type: tuple[CodeMap, ...] = Field(min_length=1)  # in order of preference
    admission_source: tuple[CodeMap, ...] = Field(min_length=1)
    discharge_disposition: tuple[CodeMap, ...] = Field(min_length=1)
    diagnosis: DiagnosisMap
    labs: LabMap
    medications: MedicationMap
    # optional inputs of the admission model: Coverage.type → payer_code, the encounter's
    # serviceType → medical_specialty (None: not read, reported missing)
    payer: TextCodes | None = None
    admitting_specialty: TextCodes | None = None
    # a coding in an alias URI is read as in its canonical system (checked: each canonical is a
    # system read above, each alias named once and no canonical itself)
    code_system_aliases: tuple[SystemAlias, ...] = ()

    def systems_read(self) -> set[str]:
        """Every code system URI this mapping reads."""
        systems = {t.system for t in (*self.admission_type, *self.admission_source)}
        systems |= {t.system for t in self.discharge_disposition}
        d = self.diagnosis
        systems |= {d.icd9_system, d.icd10_system, d.snomed_system}
        systems |= {self.labs.loinc_system, self.medications.rxnorm_system}
        for optional in (self.payer, self.admitting_specialty):
            systems |= {t.system for t in optional.systems} if optional else set()
        return systems

    @property
    def aliases(self) -> dict[str, str]:
        return {a.alias: a.canonical for a in self.code_system_aliases}

    @model_validator(mode="after")
    def _aliases_name_systems_read(self) -> FhirMapping:
        read = self.systems_read()
        seen: set[str] = set()
        for n, a in enumerate(self.code_system_aliases):
            if a.canonical not in read:
                raise ValueError(f"code_system_aliases.{n}: {a.canonical} is no system read here")
            if a.alias in read or a.alias in seen:
                raise ValueError(f"code_system_aliases.{n}: {a.alias} is named twice")
            seen.add(a.alias)
        return self

    def icd10_to_icd9(self, code: str) -> str | None:
        """A representative ICD-9-CM code of the same group, or None when no range covers it."""
        head = code.strip().upper().replace(".", "")[:3]
        for r in self.diagnosis.icd10_ranges:
            if r.from_ <= head <= r.to:
                return r.icd9
        return None


def load_fhir_mapping(path: Path | str | None = None) -> FhirMapping:
    return _load(str(path) if path else str(config_path("fhir_mapping.yaml")))


@lru_cache(maxsize=4)
def _load(path: str) -> FhirMapping:
    return load_yaml_model(Path(path), FhirMapping, FhirMappingError, "FHIR mapping")
