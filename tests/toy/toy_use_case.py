"""A toy third use case, built as docs/adding-a-use-case.md builds one: a long stay (five days
or more) predicted at admission, on the synthetic source.

It lives outside the package and registers itself on import
(``HMLOPS_FEATURE_SET_MODULES=tests.toy.toy_use_case``); its declaration is
``toy_use_case.yaml`` beside it, appended to a copy of config/use_case.yaml. No generic module
names it: the test that trains, registers, serves and monitors it checks that too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from hospital_mlops.features import USE_CASE_SETS, register_use_case_set
from hospital_mlops.features.base import FeatureDef, FeatureSet
from hospital_mlops.features.history import DAY, history
from hospital_mlops.use_case import UseCase

USE_CASE = "toy_long_stay"
SOURCE = "synthetic"
LABEL = "long_stay"
LONG_STAY_DAYS = 5
SITES = ("NORTH", "EAST", "SOUTH", "WEST")
ADMITTED_FROM = ("emergency", "referral", "transfer", "elective")
SERVICES = ("medicine", "surgery", "cardiology", "orthopedics", "oncology")


def _seconds(ts: pd.Series) -> np.ndarray:
    return (ts.dt.tz_convert("UTC").astype("int64") // 1_000_000_000).to_numpy()


def compute(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Admission-time features of each encounter, and whether its stay lasted 5 days or more."""
    enc = tables["encounters"].sort_values("admit_time", kind="stable").reset_index(drop=True)
    patients = tables["patients"].drop_duplicates("patient_token").set_index("patient_token")
    sex = enc["patient_token"].map(patients["sex"])
    start, end = _seconds(enc["admit_time"]), _seconds(enc["discharge_time"])
    prior, _, _ = history(enc["patient_token"], start, end, 365 * DAY)
    frame = pd.DataFrame(
        {
            "encounter_token": enc["encounter_token"],
            "patient_token": enc["patient_token"],
            "admit_time": enc["admit_time"],
            "age_years": enc["age_years"].astype("float64"),
            "sex_male": sex.map({"M": 1.0, "F": 0.0}).astype("float64"),
            "site": enc["site"].astype(object),
            "admitted_from": enc["admission_source"].str.lower().astype(object),
            "service": enc["service_line"].str.lower().astype(object),
            "admissions_prior_year": prior.astype("float64"),
            LABEL: ((end - start) >= LONG_STAY_DAYS * DAY).astype("int64"),
        }
    )
    known = (
        frame["admitted_from"].isin(ADMITTED_FROM)
        & frame["site"].isin(SITES)
        & frame["service"].isin(SERVICES)
    )
    stats = {"encounters_in": len(enc), "excluded_uncoded": int((~known).sum())}
    return frame.loc[known].reset_index(drop=True), stats


def build(use_case: UseCase) -> FeatureSet:
    return FeatureSet(
        name="toy_long_stay_synthetic",
        source=SOURCE,
        keys=("encounter_token", "patient_token", "admit_time"),
        label=LABEL,
        compute=compute,
        features=(
            FeatureDef("age_years", "numeric", "Age", min_value=0, max_value=110),
            FeatureDef("sex_male", "binary", "Male sex", nullable=True),
            FeatureDef("site", "categorical", "Hospital site", allowed=SITES),
            FeatureDef("admitted_from", "categorical", "Admitted from", allowed=ADMITTED_FROM),
            FeatureDef("service", "categorical", "Admitting service", allowed=SERVICES),
            FeatureDef(
                "admissions_prior_year",
                "numeric",
                "Hospital admissions in the past year",
                min_value=0,
                max_value=50,
            ),
        ),
    )


if (SOURCE, USE_CASE) not in USE_CASE_SETS:  # a test may have put it there already
    register_use_case_set(SOURCE, USE_CASE, build)
