"""The diabetes130 feature set: the UCI Diabetes 130-US extract's encounters as the
readmission model's inputs, computed two ways that tests hold equal (a frame for the pipeline,
a row for serving)."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.normalize import ENCOUNTER_ORDER
from hospital_mlops.features.base import (
    LABEL,
    FeatureDef,
    FeatureSet,
)
from hospital_mlops.features.groupings import ICD9_GROUPS, icd9_group, icd9_group_of
from hospital_mlops.features.history import history

_EXCLUDED_DISPOSITIONS = {11, 13, 14, 19, 20, 21}  # death or hospice: cannot be readmitted
MEDICATIONS = (
    "metformin",
    "repaglinide",
    "nateglinide",
    "chlorpropamide",
    "glimepiride",
    "acetohexamide",
    "glipizide",
    "glyburide",
    "tolbutamide",
    "pioglitazone",
    "rosiglitazone",
    "acarbose",
    "miglitol",
    "troglitazone",
    "tolazamide",
    "examide",
    "citoglipton",
    "insulin",
    "glyburide-metformin",
    "glipizide-metformin",
    "glimepiride-pioglitazone",
    "metformin-rosiglitazone",
    "metformin-pioglitazone",
)
SEX = {"Male": 1.0, "Female": 0.0}
_ADMISSION_TYPE = {1: "emergency", 2: "urgent", 3: "elective", 7: "emergency"}
ADMISSION_SOURCE = {
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
_DISPOSITION = {
    1: "home",
    6: "home_health",
    8: "home_health",
    3: "facility",
    4: "facility",
    5: "facility",
    15: "facility",
    22: "facility",
    23: "facility",
    24: "facility",
    2: "transfer",
    9: "transfer",
    10: "transfer",
    27: "transfer",
    28: "transfer",
    29: "transfer",
    7: "ama",
}
_LAB_BANDS = {
    "None": "not_measured",
    "Norm": "normal",
    ">7": "high",
    ">8": "very_high",
    ">200": "high",
    ">300": "very_high",
}


_BAND_LOW = r"\[(\d+)-"  # "[70-80)" → 70


def band_midpoint(bands: pd.Series) -> pd.Series:
    low = bands.astype("string").str.extract(_BAND_LOW, expand=False).astype("float64")
    return low + 5.0


_BAND_LOW_RE = re.compile(_BAND_LOW)


# The raw encounter columns the diabetes130 features read (what serving must be sent).
DIABETES130_INPUTS = (
    "race",
    "gender",
    "age",
    "admission_type_id",
    "discharge_disposition_id",
    "admission_source_id",
    "time_in_hospital",
    "num_lab_procedures",
    "num_procedures",
    "num_medications",
    "number_outpatient",
    "number_emergency",
    "number_inpatient",
    "number_diagnoses",
    "diag_1",
    "max_glu_serum",
    "A1Cresult",
    *MEDICATIONS,
    "change",
    "diabetesMed",
)


def diabetes130_features(enc: pd.DataFrame, earlier_encounters: np.ndarray) -> pd.DataFrame:
    """The diabetes130 features of each encounter row, given its count of earlier encounters.

    One function for the pipeline (which counts earlier encounters in the extract) and for
    serving (where the EHR sends the count): no training/serving skew by construction."""
    meds = enc[list(MEDICATIONS)]
    out = pd.DataFrame(
        {
            "age_years": band_midpoint(enc["age"]),
            "sex_male": enc["gender"].map(SEX).astype("float64"),
            "race": enc["race"].fillna("missing").astype(object),
            "admission_type": enc["admission_type_id"].map(_ADMISSION_TYPE).fillna("other"),
            "admission_source": enc["admission_source_id"].map(ADMISSION_SOURCE).fillna("other"),
            "discharge_disposition": enc["discharge_disposition_id"]
            .map(_DISPOSITION)
            .fillna("other"),
            "length_of_stay_days": enc["time_in_hospital"].astype("float64"),
            "num_lab_procedures": enc["num_lab_procedures"].astype("float64"),
            "num_procedures": enc["num_procedures"].astype("float64"),
            "num_medications": enc["num_medications"].astype("float64"),
            "outpatient_visits_prior_year": enc["number_outpatient"].astype("float64"),
            "emergency_visits_prior_year": enc["number_emergency"].astype("float64"),
            "inpatient_admissions_prior_year": enc["number_inpatient"].astype("float64"),
            "number_diagnoses": enc["number_diagnoses"].astype("float64"),
            "primary_diagnosis_group": icd9_group(enc["diag_1"]),
            "hba1c_result": enc["A1Cresult"].map(_LAB_BANDS).astype(object),
            "max_glucose_result": enc["max_glu_serum"].map(_LAB_BANDS).astype(object),
            "insulin": enc["insulin"].str.lower().astype(object),
            "diabetes_medications_active": (meds != "No").sum(axis=1).astype("float64"),
            "diabetes_medication_changed": (enc["change"] == "Ch").astype("float64"),
            "on_diabetes_medication": (enc["diabetesMed"] == "Yes").astype("float64"),
            "earlier_encounters_in_extract": np.asarray(earlier_encounters, dtype="float64"),
        },
        index=enc.index,
    )
    for col in ("admission_type", "admission_source", "discharge_disposition"):
        out[col] = out[col].astype(object)
    return out


def _number(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _band_midpoint_of(band: str | None) -> float:
    found = None if band is None else _BAND_LOW_RE.search(band)
    return math.nan if found is None else float(found.group(1)) + 5.0


def diabetes130_feature_row(enc: Mapping[str, Any], earlier_encounters: int) -> dict[str, Any]:
    """``diabetes130_features`` of one validated request row (catalog-typed Python values, None
    when absent), without pandas: the serving path. It mirrors the frame version line by line,
    and a test holds the two equal on every real encounter and on generated edge cases."""
    missing = math.nan  # what the frame version leaves in an unmapped cell
    insulin = enc["insulin"]
    return {
        "age_years": _band_midpoint_of(enc["age"]),
        "sex_male": SEX.get(enc["gender"], missing),
        "race": "missing" if enc["race"] is None else enc["race"],
        "admission_type": _ADMISSION_TYPE.get(enc["admission_type_id"], "other"),
        "admission_source": ADMISSION_SOURCE.get(enc["admission_source_id"], "other"),
        "discharge_disposition": _DISPOSITION.get(enc["discharge_disposition_id"], "other"),
        "length_of_stay_days": _number(enc["time_in_hospital"]),
        "num_lab_procedures": _number(enc["num_lab_procedures"]),
        "num_procedures": _number(enc["num_procedures"]),
        "num_medications": _number(enc["num_medications"]),
        "outpatient_visits_prior_year": _number(enc["number_outpatient"]),
        "emergency_visits_prior_year": _number(enc["number_emergency"]),
        "inpatient_admissions_prior_year": _number(enc["number_inpatient"]),
        "number_diagnoses": _number(enc["number_diagnoses"]),
        "primary_diagnosis_group": icd9_group_of(enc["diag_1"]),
        "hba1c_result": _LAB_BANDS.get(enc["A1Cresult"], missing),
        "max_glucose_result": _LAB_BANDS.get(enc["max_glu_serum"], missing),
        "insulin": None if insulin is None else insulin.lower(),
        "diabetes_medications_active": float(sum(enc[m] != "No" for m in MEDICATIONS)),
        "diabetes_medication_changed": float(enc["change"] == "Ch"),
        "on_diabetes_medication": float(enc["diabetesMed"] == "Yes"),
        "earlier_encounters_in_extract": float(earlier_encounters),
    }


def diabetes130_out_of_cohort_row(enc: Mapping[str, Any]) -> bool:
    return enc["discharge_disposition_id"] in _EXCLUDED_DISPOSITIONS


def diabetes130_out_of_cohort(enc: pd.DataFrame) -> np.ndarray:
    """Deaths and hospice discharges: they cannot be readmitted, so they are not scored."""
    return np.asarray(enc["discharge_disposition_id"].isin(list(_EXCLUDED_DISPOSITIONS)))


def compute_diabetes130(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
    enc = tables["encounters"].sort_values(ENCOUNTER_ORDER, kind="stable").reset_index(drop=True)
    excluded = diabetes130_out_of_cohort(enc)
    order = enc[ENCOUNTER_ORDER].astype("int64").to_numpy()
    # Order is a proxy without durations: history = all earlier encounters of the patient.
    prior, _, _ = history(enc["patient_token"], order, order, window=None)
    features = diabetes130_features(enc, prior)
    out = pd.concat(
        [
            pd.DataFrame(
                {
                    "encounter_token": enc["encounter_token"],
                    "patient_token": enc["patient_token"],
                    ENCOUNTER_ORDER: enc[ENCOUNTER_ORDER].astype("int64"),
                }
            ),
            features,
            pd.DataFrame({LABEL: (enc["readmitted"] == "<30").astype("int64")}),
        ],
        axis=1,
    )
    kept = out.loc[~excluded].reset_index(drop=True)
    return kept, {"encounters_in": len(enc), "excluded_death_or_hospice": int(excluded.sum())}


_CATS_ADMISSION_TYPE = ("emergency", "urgent", "elective", "other")
_CATS_ADMISSION_SOURCE = ("emergency_room", "referral", "transfer", "other")
_CATS_DISPOSITION = ("home", "home_health", "facility", "transfer", "ama", "other")
_CATS_LAB = ("not_measured", "normal", "high", "very_high")
_CATS_MED = ("no", "steady", "up", "down")

DIABETES130 = FeatureSet(
    name="readmission_diabetes130",
    source="diabetes130",
    keys=("encounter_token", "patient_token", ENCOUNTER_ORDER),
    label=LABEL,
    compute=compute_diabetes130,
    features=(
        FeatureDef("age_years", "numeric", "Age", min_value=0, max_value=100),
        FeatureDef("sex_male", "binary", "Male sex", nullable=True),
        FeatureDef(
            "race",
            "categorical",
            "Race (registered)",
            allowed=("Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other", "missing"),
        ),
        FeatureDef(
            "admission_type", "categorical", "Type of admission", allowed=_CATS_ADMISSION_TYPE
        ),
        FeatureDef(
            "admission_source",
            "categorical",
            "Where the patient was admitted from",
            allowed=_CATS_ADMISSION_SOURCE,
        ),
        FeatureDef(
            "discharge_disposition",
            "categorical",
            "Where the patient is discharged to",
            allowed=_CATS_DISPOSITION,
        ),
        FeatureDef(
            "length_of_stay_days", "numeric", "Length of stay (days)", min_value=1, max_value=14
        ),
        FeatureDef(
            "num_lab_procedures",
            "numeric",
            "Number of lab tests this stay",
            min_value=0,
            max_value=200,
        ),
        FeatureDef(
            "num_procedures", "numeric", "Number of procedures this stay", min_value=0, max_value=10
        ),
        FeatureDef(
            "num_medications",
            "numeric",
            "Number of medications this stay",
            min_value=0,
            max_value=120,
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
            "number_diagnoses", "numeric", "Number of diagnoses coded", min_value=1, max_value=20
        ),
        FeatureDef(
            "primary_diagnosis_group",
            "categorical",
            "Principal diagnosis group",
            allowed=ICD9_GROUPS,
        ),
        FeatureDef("hba1c_result", "categorical", "HbA1c result", allowed=_CATS_LAB),
        FeatureDef("max_glucose_result", "categorical", "Highest serum glucose", allowed=_CATS_LAB),
        FeatureDef("insulin", "categorical", "Insulin this stay", allowed=_CATS_MED),
        FeatureDef(
            "diabetes_medications_active",
            "numeric",
            "Number of diabetes medications",
            min_value=0,
            max_value=23,
        ),
        FeatureDef("diabetes_medication_changed", "binary", "Diabetes medication changed"),
        FeatureDef("on_diabetes_medication", "binary", "On diabetes medication"),
        FeatureDef(
            "earlier_encounters_in_extract",
            "numeric",
            "Earlier admissions on record",
            min_value=0,
            max_value=100,
        ),
    ),
)
