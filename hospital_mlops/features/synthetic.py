"""The synthetic source's feature set: vitals, labs and history from the multi-table extract."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hospital_mlops.features.base import (
    HISTORY_DAYS,
    LABEL,
    READMISSION_WINDOW_DAYS,
    FeatureDef,
    FeatureSet,
)
from hospital_mlops.features.groupings import ICD10_GROUPS, icd10_group, per_category
from hospital_mlops.features.history import DAY, history

_SYN_DISPOSITION = {
    "HOME": "home",
    "HOME_HEALTH": "home_health",
    "SNF": "facility",
    "REHAB": "facility",
    "AMA": "ama",
}
_SYN_EXCLUDED = ("EXPIRED", "HOSPICE")
_LAB_FEATURES = {  # feature: (lab code, aggregate)
    "glucose_last_mg_dl": ("GLU", "last"),
    "creatinine_max_mg_dl": ("CREAT", "max"),
    "sodium_last_mmol_l": ("NA", "last"),
    "hemoglobin_min_g_dl": ("HGB", "min"),
    "hba1c_last_pct": ("HBA1C", "last"),
}
_VITAL_FEATURES = {
    "heart_rate_last": ("heart_rate", "last"),
    "sbp_last": ("sbp", "last"),
    "temp_max_c": ("temp_c", "max"),
    "resp_rate_last": ("resp_rate", "last"),
    "spo2_min": ("spo2", "min"),
}


def _per_encounter(
    n_encounters: int,
    pos: np.ndarray,
    event_ns: np.ndarray,
    values: Mapping[str, np.ndarray],
    how: Mapping[str, str],
) -> dict[str, np.ndarray]:
    """Aggregate observation rows onto encounters. ``pos`` is each row's encounter position (-1:
    none); ``how`` is last/min/max per feature, "last" meaning the latest non-missing value by
    event time. Rows are sorted once, whatever the number of features."""
    keep = pos >= 0
    order = np.lexsort((event_ns[keep], pos[keep]))
    frame = pd.DataFrame({name: v[keep][order] for name, v in values.items()})
    frame["_pos"] = pos[keep][order]
    grouped = frame.groupby("_pos", sort=False)
    out = {}
    for feature, agg_how in how.items():
        agg = grouped[feature].last() if agg_how == "last" else grouped[feature].agg(agg_how)
        result = np.full(n_encounters, np.nan)
        result[agg.index.to_numpy()] = agg.to_numpy(dtype="float64")
        out[feature] = result
    return out


def _event_ns(rows: pd.DataFrame) -> np.ndarray:
    return rows["event_time"].to_numpy(dtype="datetime64[ns]").astype("int64")


def _seconds(ts: pd.Series) -> np.ndarray:
    return (ts.dt.tz_convert("UTC").astype("int64") // 1_000_000_000).to_numpy()


def compute_synthetic(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
    encounters = tables["encounters"]
    by_discharge = np.argsort(_seconds(encounters["discharge_time"]), kind="stable")
    enc = encounters.iloc[by_discharge].reset_index(drop=True)
    patients = tables["patients"].drop_duplicates("patient_token")
    at_patient = pd.Index(patients["patient_token"]).get_indexer(enc["patient_token"])
    found = at_patient >= 0
    sex = pd.Series(patients["sex"].to_numpy(dtype=object)[at_patient]).where(found)
    race = pd.Series(patients["race"].to_numpy(dtype=object)[at_patient]).where(found)
    start, end = _seconds(enc["admit_time"]), _seconds(enc["discharge_time"])
    prior, since, readmit = history(enc["patient_token"], start, end, HISTORY_DAYS * DAY)
    # An outcome is observable only if the extract covers the 30 days after discharge.
    observable = end + READMISSION_WINDOW_DAYS * DAY <= int(start.max())
    vitals, labs = tables["vitals"], tables["labs"]
    out = pd.DataFrame(
        {
            "encounter_token": enc["encounter_token"],
            "patient_token": enc["patient_token"],
            "discharge_time": enc["discharge_time"],
            "age_years": enc["age_years"].astype("float64"),
            "sex_male": per_category(sex, lambda v: {"M": 1.0, "F": 0.0}.get(str(v)), None)
            .astype("float64")
            .to_numpy(),
            "race": per_category(race, lambda r: r, "missing").to_numpy(),
            "site": enc["site"].astype(object),
            "service_line": per_category(enc["service_line"], lambda v: str(v).lower(), None),
            "admission_source": per_category(
                enc["admission_source"], lambda v: str(v).lower(), None
            ),
            "discharge_disposition": per_category(
                enc["discharge_disposition"],
                lambda v: _SYN_DISPOSITION.get(str(v), "other"),
                "other",
            ),
            "length_of_stay_days": np.round((end - start) / DAY, 4),
            "primary_diagnosis_group": icd10_group(enc["primary_dx"]),
            "admissions_prior_year": prior.astype("float64"),
            "days_since_last_discharge": np.round(since, 4),
        }
    )
    index = pd.Index(enc["encounter_token"])
    n = len(index)
    vpos = index.get_indexer(vitals["encounter_token"])
    out = out.assign(
        **_per_encounter(
            n,
            vpos,
            _event_ns(vitals),
            {f: vitals[col].to_numpy(dtype="float64") for f, (col, _) in _VITAL_FEATURES.items()},
            {f: how for f, (_, how) in _VITAL_FEATURES.items()},
        )
    )
    lpos = index.get_indexer(labs["encounter_token"])
    lab_codes = labs["lab_code"].to_numpy()
    lab_values = labs["value"].to_numpy(dtype="float64")
    lab_events = _event_ns(labs)
    for feature, (code, how) in _LAB_FEATURES.items():
        rows = lab_codes == code
        out[feature] = _per_encounter(
            n, lpos[rows], lab_events[rows], {feature: lab_values[rows]}, {feature: how}
        )[feature]
    out["labs_resulted"] = np.bincount(lpos[lpos >= 0], minlength=n).astype("float64")
    out[LABEL] = readmit.astype("int64")
    excluded = enc["discharge_disposition"].isin(_SYN_EXCLUDED).to_numpy()
    keep = ~excluded & observable
    stats = {
        "encounters_in": len(enc),
        "excluded_death_or_hospice": int(excluded.sum()),
        "excluded_outcome_not_yet_observable": int((~observable & ~excluded).sum()),
    }
    return out.loc[keep].reset_index(drop=True), stats


SYNTHETIC = FeatureSet(
    name="readmission_synthetic",
    source="synthetic",
    keys=("encounter_token", "patient_token", "discharge_time"),
    label=LABEL,
    compute=compute_synthetic,
    features=(
        FeatureDef("age_years", "numeric", "Age", min_value=0, max_value=90),
        FeatureDef("sex_male", "binary", "Male sex", nullable=True),
        FeatureDef(
            "race",
            "categorical",
            "Race (registered)",
            allowed=("White", "Black", "Hispanic", "Asian", "Other", "missing"),
        ),
        FeatureDef(
            "site", "categorical", "Hospital site", allowed=("NORTH", "EAST", "SOUTH", "WEST")
        ),
        FeatureDef(
            "service_line",
            "categorical",
            "Discharging service",
            allowed=("medicine", "surgery", "cardiology", "orthopedics", "oncology"),
        ),
        FeatureDef(
            "admission_source",
            "categorical",
            "Where the patient was admitted from",
            allowed=("emergency", "referral", "transfer", "elective"),
        ),
        FeatureDef(
            "discharge_disposition",
            "categorical",
            "Where the patient is discharged to",
            allowed=("home", "home_health", "facility", "ama", "other"),
        ),
        FeatureDef(
            "length_of_stay_days", "numeric", "Length of stay (days)", min_value=0, max_value=60
        ),
        FeatureDef(
            "primary_diagnosis_group",
            "categorical",
            "Principal diagnosis group",
            allowed=ICD10_GROUPS,
        ),
        FeatureDef(
            "admissions_prior_year",
            "numeric",
            "Hospital admissions in the past year",
            min_value=0,
            max_value=100,
        ),
        FeatureDef(
            "days_since_last_discharge",
            "numeric",
            "Days since the last discharge",
            min_value=0,
            max_value=HISTORY_DAYS * 10,
            nullable=True,
        ),
        FeatureDef(
            "heart_rate_last",
            "numeric",
            "Last heart rate",
            min_value=20,
            max_value=250,
            nullable=True,
        ),
        FeatureDef(
            "sbp_last",
            "numeric",
            "Last systolic blood pressure",
            min_value=40,
            max_value=260,
            nullable=True,
        ),
        FeatureDef(
            "temp_max_c",
            "numeric",
            "Highest temperature",
            min_value=30,
            max_value=43,
            nullable=True,
        ),
        FeatureDef(
            "resp_rate_last",
            "numeric",
            "Last respiratory rate",
            min_value=4,
            max_value=60,
            nullable=True,
        ),
        FeatureDef(
            "spo2_min",
            "numeric",
            "Lowest oxygen saturation",
            min_value=50,
            max_value=100,
            nullable=True,
        ),
        FeatureDef(
            "glucose_last_mg_dl",
            "numeric",
            "Last glucose",
            min_value=10,
            max_value=1500,
            nullable=True,
        ),
        FeatureDef(
            "creatinine_max_mg_dl",
            "numeric",
            "Highest creatinine",
            min_value=0.1,
            max_value=20,
            nullable=True,
        ),
        FeatureDef(
            "sodium_last_mmol_l",
            "numeric",
            "Last sodium",
            min_value=100,
            max_value=180,
            nullable=True,
        ),
        FeatureDef(
            "hemoglobin_min_g_dl",
            "numeric",
            "Lowest hemoglobin",
            min_value=3,
            max_value=25,
            nullable=True,
        ),
        FeatureDef(
            "hba1c_last_pct", "numeric", "Last HbA1c", min_value=3, max_value=20, nullable=True
        ),
        FeatureDef(
            "labs_resulted", "numeric", "Lab results this stay", min_value=0, max_value=1000
        ),
    ),
)
