"""The post-acute feature set on diabetes130: what is known about a stay at admission, and where
the patient went at discharge (issue 22's second use case; declared, not wired into the pipeline
yet).

Only admission-time facts are read: demographics, admission type and source, payer, the admitting
physician's specialty, the prior year's utilisation and the patient's earlier encounters in the
extract. Everything recorded during the stay (lab, procedure and medication counts, length of
stay, medication changes, glucose and HbA1c results) and the diagnosis codes (diabetes130 codes the
stay's discharge diagnoses, not the admitting one) are never read: ``ADMISSION_INPUTS`` is the
whole list, and a test replaces every other column with noise and finds the same features.

The label comes from the use case's ``label.codes`` (config/use_case.yaml): each discharge
disposition is positive, negative, ambiguous (dropped and counted) or outside the intended use
(deaths and hospice: dropped and counted). The codes are part of the set's version.

The definitions here are this set's own (no import from the readmission set), so the two
versions move independently.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.features.base import FeatureDef, FeatureSet
from hospital_mlops.features.diabetes130_subgroups import diabetes130_subgroups
from hospital_mlops.features.history import history
from hospital_mlops.use_case import LabelCodes

ENCOUNTER_ORDER = "encounter_order"
LABEL = "post_acute_care"

# The raw encounter columns this set reads: all of them known at admission.
ADMISSION_INPUTS = (
    "race",
    "gender",
    "age",
    "admission_type_id",
    "admission_source_id",
    "payer_code",
    "medical_specialty",
    "number_outpatient",
    "number_emergency",
    "number_inpatient",
)

_SEX = {"Male": 1.0, "Female": 0.0}
_ADMISSION_TYPE = {1: "emergency", 2: "urgent", 3: "elective", 7: "emergency"}
_ADMISSION_SOURCE = {
    1: "referral",
    2: "referral",
    3: "referral",
    4: "transfer",
    5: "transfer",
    6: "transfer",
    7: "emergency_room",
    10: "transfer",
    22: "transfer",
    25: "transfer",
}
# payers with at least ~1% of encounters keep their code (MC Medicare, MD Medicaid, SP self-pay,
# HM/BC/CP/UN/CM/OG commercial and other plans); the rest are "other"
_PAYERS = ("MC", "MD", "SP", "HM", "BC", "CP", "UN", "CM", "OG")
# admitting specialties with at least ~0.5% of encounters; orthopaedics and surgery kept apart
# because elective joint and surgical stays so often end in rehabilitation
_SPECIALTIES = {
    "InternalMedicine": "internal_medicine",
    "Emergency/Trauma": "emergency_trauma",
    "Family/GeneralPractice": "family_general_practice",
    "Cardiology": "cardiology",
    "Surgery-General": "general_surgery",
    "Nephrology": "nephrology",
    "Orthopedics": "orthopaedics",
    "Orthopedics-Reconstructive": "orthopaedics",
    "Radiologist": "radiology",
    "Pulmonology": "pulmonology",
    "Psychiatry": "psychiatry",
    "Urology": "urology",
    "ObstetricsandGynecology": "obstetrics_gynaecology",
    "Surgery-Cardiovascular/Thoracic": "cardiothoracic_surgery",
    "Gastroenterology": "gastroenterology",
}
_CATS_ADMISSION_TYPE = ("emergency", "urgent", "elective", "other")
_CATS_ADMISSION_SOURCE = ("emergency_room", "referral", "transfer", "other")
_CATS_PAYER = (*_PAYERS, "other", "missing")
_CATS_SPECIALTY = (*sorted(set(_SPECIALTIES.values())), "other", "missing")
_RACES = ("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other", "missing")
# its monitoring break-downs, through this set's own sex and admission-source codes
ADMISSION_SUBGROUPS = diabetes130_subgroups(_SEX, _ADMISSION_SOURCE)


def _age_midpoint(bands: pd.Series) -> pd.Series:
    low = bands.astype("string").str.extract(r"\[(\d+)-", expand=False).astype("float64")
    return low + 5.0


def _grouped(values: pd.Series, known: Mapping[str, str] | tuple[str, ...]) -> pd.Series:
    table = known if isinstance(known, Mapping) else {v: v for v in known}
    text = values.astype("string")
    out = text.map(table).astype(object)
    out[text.isna().to_numpy()] = "missing"
    out[out.isna().to_numpy()] = "other"
    return out.astype(object)


def admission_features(enc: pd.DataFrame, earlier_encounters: np.ndarray) -> pd.DataFrame:
    """The admission-time features of each encounter row, given its count of earlier
    encounters. Reads ``ADMISSION_INPUTS`` only."""
    columns = enc[list(ADMISSION_INPUTS)]
    return pd.DataFrame(
        {
            "age_years": _age_midpoint(columns["age"]),
            "sex_male": columns["gender"].map(_SEX).astype("float64"),
            "race": columns["race"].fillna("missing").astype(object),
            "admission_type": columns["admission_type_id"]
            .map(_ADMISSION_TYPE)
            .fillna("other")
            .astype(object),
            "admission_source": columns["admission_source_id"]
            .map(_ADMISSION_SOURCE)
            .fillna("other")
            .astype(object),
            "payer": _grouped(columns["payer_code"], _PAYERS),
            "admitting_specialty": _grouped(columns["medical_specialty"], _SPECIALTIES),
            "outpatient_visits_prior_year": columns["number_outpatient"].astype("float64"),
            "emergency_visits_prior_year": columns["number_emergency"].astype("float64"),
            "inpatient_admissions_prior_year": columns["number_inpatient"].astype("float64"),
            "earlier_encounters_in_extract": np.asarray(earlier_encounters, dtype="float64"),
        },
        index=enc.index,
    )


def disposition_label(dispositions: pd.Series, codes: LabelCodes) -> tuple[pd.Series, pd.Series]:
    """(label 1/0, kept) per encounter: kept is False for ambiguous and out-of-use codes, and
    for a code the use case does not place at all (which the catalog's code table forbids)."""
    code = pd.to_numeric(dispositions, errors="coerce")
    positive = code.isin(codes.positive)
    negative = code.isin(codes.negative)
    return positive.astype("int64"), (positive | negative)


def _counts(dispositions: pd.Series, codes: LabelCodes) -> dict[str, int]:
    code = pd.to_numeric(dispositions, errors="coerce")
    return {
        "excluded_outside_intended_use": int(code.isin(list(codes.outside_intended_use)).sum()),
        "excluded_ambiguous_disposition": int(code.isin(list(codes.excluded_ambiguous)).sum()),
        "excluded_unplaced_disposition": int((~code.isin(list(codes.all_codes()))).sum()),
    }


@dataclass(frozen=True)
class LabelledFeatureSet(FeatureSet):
    """A feature set whose label is read through codes declared in config: the codes are part
    of its version, so moving one code from one list to another makes a new version."""

    label_codes: LabelCodes | None = None

    @property
    def version(self) -> str:
        codes = self.label_codes.model_dump(mode="json") if self.label_codes else None
        payload = json.dumps({"base": super().version, "label_codes": codes}, sort_keys=True)
        return f"{self.name}@{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def post_acute_feature_set(codes: LabelCodes) -> LabelledFeatureSet:
    """The set, with the use case's disposition codes bound into its computation."""

    def compute(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
        enc = tables["encounters"].sort_values(ENCOUNTER_ORDER, kind="stable")
        enc = enc.reset_index(drop=True)
        order = enc[ENCOUNTER_ORDER].astype("int64").to_numpy()
        # order is a proxy without durations: history = every earlier encounter of the patient
        prior, _, _ = history(enc["patient_token"], order, order, window=None)
        label, kept = disposition_label(enc[codes.column], codes)
        out = pd.concat(
            [
                pd.DataFrame(
                    {
                        "encounter_token": enc["encounter_token"],
                        "patient_token": enc["patient_token"],
                        ENCOUNTER_ORDER: enc[ENCOUNTER_ORDER].astype("int64"),
                    }
                ),
                admission_features(enc, prior),
                pd.DataFrame({LABEL: label}),
            ],
            axis=1,
        )
        stats = {"encounters_in": len(enc), **_counts(enc[codes.column], codes)}
        return out.loc[kept.to_numpy()].reset_index(drop=True), stats

    return LabelledFeatureSet(
        name="post_acute_diabetes130",
        source="diabetes130",
        keys=("encounter_token", "patient_token", ENCOUNTER_ORDER),
        label=LABEL,
        compute=compute,
        label_codes=codes,
        features=(
            FeatureDef("age_years", "numeric", "Age", min_value=0, max_value=100),
            FeatureDef("sex_male", "binary", "Male sex", nullable=True),
            FeatureDef("race", "categorical", "Race (registered)", allowed=_RACES),
            FeatureDef(
                "admission_type", "categorical", "Type of admission", allowed=_CATS_ADMISSION_TYPE
            ),
            FeatureDef(
                "admission_source",
                "categorical",
                "Where the patient was admitted from",
                allowed=_CATS_ADMISSION_SOURCE,
            ),
            FeatureDef("payer", "categorical", "Payer", allowed=_CATS_PAYER),
            FeatureDef(
                "admitting_specialty",
                "categorical",
                "Admitting physician's specialty",
                allowed=_CATS_SPECIALTY,
            ),
            FeatureDef(
                "outpatient_visits_prior_year",
                "numeric",
                "Outpatient visits in the past year",
                min_value=0,
                max_value=100,
            ),
            FeatureDef(
                "emergency_visits_prior_year",
                "numeric",
                "ED visits in the past year",
                min_value=0,
                max_value=100,
            ),
            FeatureDef(
                "inpatient_admissions_prior_year",
                "numeric",
                "Hospital admissions in the past year",
                min_value=0,
                max_value=50,
            ),
            FeatureDef(
                "earlier_encounters_in_extract",
                "numeric",
                "Earlier admissions on record",
                min_value=0,
                max_value=100,
            ),
        ),
    )


def admission_feature_row(enc: Mapping[str, Any], earlier_encounters: int) -> dict[str, Any]:
    """``admission_features`` of one validated request row, without pandas (serving's path);
    a test holds the two equal on real encounters."""

    def number(value: object) -> float:
        return math.nan if value is None else float(value)  # type: ignore[arg-type]

    def grouped(value: str | None, known: Mapping[str, str]) -> str:
        return "missing" if value is None else known.get(value, "other")

    age = enc["age"]
    low = None if age is None else age[1:].split("-", 1)[0]
    return {
        "age_years": float(low) + 5.0 if low and low.isdigit() else math.nan,
        "sex_male": _SEX.get(enc["gender"], math.nan),
        "race": "missing" if enc["race"] is None else enc["race"],
        "admission_type": _ADMISSION_TYPE.get(enc["admission_type_id"], "other"),
        "admission_source": _ADMISSION_SOURCE.get(enc["admission_source_id"], "other"),
        "payer": grouped(enc["payer_code"], {p: p for p in _PAYERS}),
        "admitting_specialty": grouped(enc["medical_specialty"], _SPECIALTIES),
        "outpatient_visits_prior_year": number(enc["number_outpatient"]),
        "emergency_visits_prior_year": number(enc["number_emergency"]),
        "inpatient_admissions_prior_year": number(enc["number_inpatient"]),
        "earlier_encounters_in_extract": float(earlier_encounters),
    }
