"""Versioned feature definitions: the one module the pipeline and the serving predictor share.

Each source has a feature set: a list of ``FeatureDef`` (name, kind, allowed values or range,
clinical wording for reason codes) and one function that computes them from normalized tables.
The feature-set version is a hash of the definitions and of this module's code, so any change to
what a feature means changes the version recorded in every manifest.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from hospital_mlops.normalize import ENCOUNTER_ORDER

Kind = Literal["numeric", "binary", "categorical"]
LABEL = "readmitted_30d"
READMISSION_WINDOW_DAYS = 30
HISTORY_DAYS = 365


@dataclass(frozen=True)
class FeatureDef:
    name: str
    kind: Kind
    clinical_wording: str
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    nullable: bool = False


@dataclass(frozen=True)
class FeatureSet:
    name: str
    source: str
    features: tuple[FeatureDef, ...]
    keys: tuple[str, ...]
    label: str
    compute: Callable[[Mapping[str, pd.DataFrame]], tuple[pd.DataFrame, dict[str, int]]]

    @property
    def version(self) -> str:
        payload = {
            "name": self.name,
            "features": [asdict(f) for f in self.features],
            "keys": list(self.keys),
            "label": self.label,
            "code": inspect.getsource(sys.modules[__name__]),
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.name}@{digest[:12]}"

    @property
    def columns(self) -> list[str]:
        return [*self.keys, *(f.name for f in self.features), self.label]


# --- shared clinical groupings -----------------------------------------------------------------

ICD9_GROUPS = (
    "circulatory",
    "respiratory",
    "digestive",
    "diabetes",
    "injury",
    "musculoskeletal",
    "genitourinary",
    "neoplasms",
    "other",
    "missing",
)


# (group, [low, high) code range, whole code number); where rules overlap the later one wins.
_ICD9_RULES: tuple[tuple[str, tuple[int, int] | None, int | None], ...] = (
    ("circulatory", (390, 460), 785),
    ("respiratory", (460, 520), 786),
    ("digestive", (520, 580), 787),
    ("diabetes", None, 250),
    ("injury", (800, 1000), None),
    ("musculoskeletal", (710, 740), None),
    ("genitourinary", (580, 630), 788),
    ("neoplasms", (140, 240), None),
)
# What the row-wise path parses itself: short plain decimals, where Python's float() and
# pandas' to_numeric agree exactly. Anything else goes through ``icd9_group``.
_PLAIN_ICD9_NUMBER = re.compile(r"[0-9]{1,6}(?:\.[0-9]{0,6})?")


def icd9_group(codes: pd.Series) -> pd.Series:
    """Strack et al. (2014) diagnosis groups from ICD-9-CM codes."""
    text = codes.astype("string")
    numeric = pd.to_numeric(text.where(~text.str.match(r"^[VE]", na=False)), errors="coerce")
    out = pd.Series("other", index=codes.index, dtype=object)
    whole_code = numeric.floordiv(1)
    for group, span, whole in _ICD9_RULES:
        parts = [] if span is None else [(numeric >= span[0]) & (numeric < span[1])]
        parts += [] if whole is None else [whole_code == whole]
        mask = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        out[mask.fillna(False).to_numpy(dtype=bool)] = group
    out[text.isna().to_numpy()] = "missing"
    return out


def icd9_group_of(code: str | None) -> str:
    """``icd9_group`` of one code, without pandas for the codes a hospital actually sends."""
    if code is None:
        return "missing"
    if code.startswith(("V", "E")):
        return "other"
    if _PLAIN_ICD9_NUMBER.fullmatch(code) is None:
        return str(icd9_group(pd.Series([code], dtype=object)).iloc[0])
    number = float(code)
    group = "other"
    for name, span, whole in _ICD9_RULES:
        if (span is not None and span[0] <= number < span[1]) or (
            whole is not None and math.floor(number) == whole
        ):
            group = name
    return group


ICD10_GROUPS = (
    "circulatory",
    "respiratory",
    "digestive",
    "endocrine",
    "injury",
    "musculoskeletal",
    "genitourinary",
    "neoplasms",
    "infection",
    "other",
    "missing",
)
_ICD10_CHAPTERS = {
    "I": "circulatory",
    "J": "respiratory",
    "K": "digestive",
    "E": "endocrine",
    "S": "injury",
    "T": "injury",
    "M": "musculoskeletal",
    "N": "genitourinary",
    "C": "neoplasms",
    "D": "neoplasms",
    "A": "infection",
    "B": "infection",
}


def per_category(values: pd.Series, fn: Callable[[object], object], missing: object) -> pd.Series:
    """Apply ``fn`` once per distinct value (a coded column has few) and broadcast back."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True, sort=False)
    mapped = np.array([fn(u) for u in uniques] + [missing], dtype=object)
    return pd.Series(mapped[codes], index=values.index)


def _icd10_chapter(code: object) -> object:
    text = str(code).strip().upper()
    return _ICD10_CHAPTERS.get(text[:1], "other")


def icd10_group(codes: pd.Series) -> pd.Series:
    return per_category(codes, _icd10_chapter, "missing")


_SPAN = 1 << 42  # seconds (~139,000 years): above any time or window used here
_DAY = 86_400


def _history(
    patient: pd.Series, start: np.ndarray, end: np.ndarray, window: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per encounter: prior encounters ending in [start - window, start) (all earlier ones when
    ``window`` is None), days since the last one ended, and whether the same patient starts
    another within ``READMISSION_WINDOW_DAYS`` of this one's end.

    Only encounters that ended before this one started count as history: nothing from the future
    leaks into a feature. ``start``/``end`` are int64 seconds in [0, _SPAN); keys are exact
    integers (patient code × _SPAN + time), so results do not depend on which other patients
    are in the extract.
    """
    codes, _ = pd.factorize(patient)
    base = codes.astype("int64") * _SPAN
    start = np.asarray(start, dtype="int64")
    end = np.asarray(end, dtype="int64")
    end_keys = np.sort(base + end)
    start_keys = np.sort(base + start)
    this_start = base + start
    first = np.searchsorted(end_keys, base, side="left")
    lo = first if window is None else np.searchsorted(end_keys, this_start - window, side="left")
    hi = np.searchsorted(end_keys, this_start, side="left")
    prior = (hi - lo).astype("int64")
    has_prior = hi > first
    last_end = end_keys[np.maximum(hi - 1, 0)] - base
    since = np.where(has_prior, (start - last_end) / _DAY, np.nan)
    this_end = base + end
    nxt = np.searchsorted(start_keys, this_end, side="right")
    nxt_key = start_keys[np.minimum(nxt, len(start_keys) - 1)]
    same_patient = (nxt < len(start_keys)) & (nxt_key < base + _SPAN)
    readmit = same_patient & (nxt_key - this_end <= READMISSION_WINDOW_DAYS * _DAY)
    return prior, since, readmit


# --- diabetes130 -------------------------------------------------------------------------------

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
    prior, _, _ = _history(enc["patient_token"], order, order, window=None)
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


# --- synthetic ---------------------------------------------------------------------------------

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
    prior, since, readmit = _history(enc["patient_token"], start, end, HISTORY_DAYS * _DAY)
    # An outcome is observable only if the extract covers the 30 days after discharge.
    observable = end + READMISSION_WINDOW_DAYS * _DAY <= int(start.max())
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
            "length_of_stay_days": np.round((end - start) / _DAY, 4),
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

FEATURE_SETS: dict[str, FeatureSet] = {fs.source: fs for fs in (DIABETES130, SYNTHETIC)}


def feature_set_for(source: str) -> FeatureSet:
    if source not in FEATURE_SETS:
        raise KeyError(f"no feature set is defined for source {source!r}")
    return FEATURE_SETS[source]


def build_features(
    source: str, tables: Mapping[str, pd.DataFrame]
) -> tuple[pd.DataFrame, dict[str, int]]:
    fs = feature_set_for(source)
    frame, stats = fs.compute(tables)
    return frame[fs.columns], stats
