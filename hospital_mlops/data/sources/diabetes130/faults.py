"""The diabetes130 source's fault scenarios (the raw CSV text of the UCI extract): how each named
scenario of ``hospital_mlops.data.faults`` is injected into this source's extract, and where it
must be caught."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from hospital_mlops.data.fault_injection import (
    Expected,
    Injector,
    SourceFaults,
    Tables,
    dropped,
    empty,
    renamed,
    rows,
    with_tables,
)


def _column(column: str, fn: Callable[[pd.Series], pd.Series], fraction: float) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        enc = t["encounters"].copy()
        idx = enc.index[rows(enc, rng, fraction)]
        enc.loc[idx, column] = fn(enc.loc[idx, column])
        return with_tables(t, encounters=enc)

    return inject


def _duplicates(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"]
    dup = enc.iloc[rows(enc, rng, 0.01)].copy()
    dup["encounter_id"] = "0" + dup["encounter_id"].astype(str)  # zero-padded resend
    return with_tables(t, encounters=pd.concat([enc, dup], ignore_index=True))


def _assay(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc["num_lab_procedures"] = (enc["num_lab_procedures"].astype(int) + 30).astype(str)
    return with_tables(t, encounters=enc)


def _retype(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc["time_in_hospital"] = enc["time_in_hospital"].astype(str) + " days"
    return with_tables(t, encounters=enc)


FAULTS: SourceFaults = {
    "assay_shift": (
        _assay,
        Expected(
            "validate",
            "encounters",
            "num_lab_procedures",
            "expect_column_median_to_be_between",
        ),
    ),
    "diagnoses_truncated": (
        _column("number_diagnoses", lambda s: s.map(lambda _: "1"), 1.0),
        Expected(
            "validate",
            "encounters",
            "number_diagnoses",
            "expect_column_median_to_be_between",
        ),
    ),
    "duplicates": (
        _duplicates,
        Expected(
            "validate",
            "encounters",
            "encounter_token",
            "expect_column_values_to_be_unique",
        ),
    ),
    "schema_rename": (
        renamed("encounters", "A1Cresult", "a1c_result"),
        Expected("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
    ),
    "schema_drop": (
        dropped("encounters", "max_glu_serum"),
        Expected("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
    ),
    "schema_retype": (
        _retype,
        Expected(
            "ingest",
            "encounters",
            "time_in_hospital",
            "expect_column_values_to_match_regex",
        ),
    ),
    "out_of_range": (
        _column("time_in_hospital", lambda s: s.map(lambda _: "45"), 0.01),
        Expected(
            "validate",
            "encounters",
            "time_in_hospital",
            "expect_column_values_to_be_between",
        ),
    ),
    "null_burst": (
        _column("race", lambda s: s.map(lambda _: None), 0.2),
        Expected("validate", "encounters", "race", "expect_column_values_to_not_be_null"),
    ),
    "new_category": (
        _column("admission_source_id", lambda s: s.map(lambda _: "99"), 0.01),
        Expected(
            "validate",
            "encounters",
            "admission_source_id",
            "expect_column_values_to_be_in_set",
        ),
    ),
    "empty_extract": (
        empty,
        Expected("ingest", "encounters", "*", "expect_table_row_count_to_be_between"),
    ),
}
