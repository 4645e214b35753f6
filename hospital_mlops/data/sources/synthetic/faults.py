"""The synthetic source's fault scenarios (typed parquet tables): how each named scenario of
``hospital_mlops.data.faults`` is injected into this source's extract, and where it must be
caught."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hospital_mlops.data.fault_injection import (
    Expected,
    SourceFaults,
    Tables,
    dropped,
    empty,
    renamed,
    rows,
    with_tables,
)
from hospital_mlops.data.sources.synthetic.parquet_extract import write_tables


def _unit_change(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    glu = (labs["lab_code"] == "GLU") & (labs["unit"] == "mg/dL")
    labs.loc[glu, "value"] = (labs.loc[glu, "value"] / 18.016).round(1)  # SI, still "mg/dL"
    return with_tables(t, labs=labs)


def _assay_shift(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    creat = labs["lab_code"] == "CREAT"
    si = creat & (labs["unit"] == "umol/L")
    labs.loc[creat & ~si, "value"] = labs.loc[creat & ~si, "value"] + 0.6
    labs.loc[si, "value"] = labs.loc[si, "value"] + 0.6 / 0.01131
    return with_tables(t, labs=labs)


def _respell(ids: pd.Series) -> pd.Series:
    digits = ids.astype(str).str.extract(r"(\d+)", expand=False).astype(int)
    return digits.map(lambda d: f"enc{d}")


def _duplicates(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"]
    dup = enc.iloc[rows(enc, rng, 0.02)].copy()
    dup["encounter_id"] = _respell(dup["encounter_id"])  # same encounter, another spelling
    return with_tables(t, encounters=pd.concat([enc, dup], ignore_index=True))


def _late(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    idx = rows(labs, rng, 0.05)
    delay = pd.to_timedelta(rng.uniform(5, 15, size=len(idx)), unit="D")
    labs.loc[labs.index[idx], "recorded_time"] = labs["recorded_time"].iloc[idx] + delay
    return with_tables(t, labs=labs)


def _retype(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    labs["value"] = labs["value"].map(lambda v: f"{v:g} " if pd.notna(v) else None)
    return with_tables(t, labs=labs)


def _out_of_range(t: Tables, rng: np.random.Generator) -> Tables:
    vitals = t["vitals"].copy()
    idx = vitals.index[rows(vitals, rng, 0.01)]
    vitals.loc[idx, "heart_rate"] = 400.0
    return with_tables(t, vitals=vitals)


def _timezone(t: Tables, rng: np.random.Generator) -> Tables:
    """NORTH's monitors send local wall-clock time labelled as UTC after a gateway update."""
    vitals = t["vitals"].copy()
    enc = t["encounters"]
    north = set(enc.loc[enc["site"] == "NORTH", "encounter_id"])
    rows = vitals["encounter_id"].isin(north)
    vitals.loc[rows, "event_time"] = vitals.loc[rows, "event_time"] + pd.Timedelta(hours=5)
    return with_tables(t, vitals=vitals)


def _patient_merge(t: Tables, rng: np.random.Generator) -> Tables:
    """The EMPI merge list did not arrive: duplicate registrations stay two 'patients'."""
    return with_tables(t, patient_merges=t["patient_merges"].iloc[0:0])


def _null_burst(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc.loc[enc["site"] == "EAST", "primary_dx"] = None
    return with_tables(t, encounters=enc)


def _new_category(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc.loc[enc.index[rows(enc, rng, 0.02)], "service_line"] = "TELEMETRY"
    return with_tables(t, encounters=enc)


# the extract's own writer (a parquet extract names its generator)
write_extract = write_tables

FAULTS: SourceFaults = {
    "unit_change": (
        _unit_change,
        Expected("validate", "labs[GLU]", "value", "expect_column_median_to_be_between"),
    ),
    "assay_shift": (
        _assay_shift,
        Expected("validate", "labs[CREAT]", "value", "expect_column_median_to_be_between"),
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
    "late_arriving": (
        _late,
        Expected(
            "validate",
            "labs",
            "recording_delay_hours",
            "expect_column_values_to_be_between",
        ),
    ),
    "schema_rename": (
        renamed("vitals", "heart_rate", "hr"),
        Expected("ingest", "vitals", "*", "expect_table_columns_to_match_set"),
    ),
    "schema_drop": (
        dropped("encounters", "discharge_disposition"),
        Expected("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
    ),
    "schema_retype": (
        _retype,
        Expected("ingest", "labs", "value", "expect_column_values_to_be_in_type_list"),
    ),
    "out_of_range": (
        _out_of_range,
        Expected("validate", "vitals", "heart_rate", "expect_column_values_to_be_between"),
    ),
    "timezone_shift": (
        _timezone,
        Expected(
            "validate",
            "vitals",
            "recording_delay_hours",
            "expect_column_values_to_be_between",
        ),
    ),
    "patient_merge": (
        _patient_merge,
        Expected(
            "validate",
            "patients",
            "person_fingerprint",
            "expect_column_values_to_be_unique",
        ),
    ),
    "null_burst": (
        _null_burst,
        Expected(
            "validate",
            "encounters",
            "primary_dx",
            "expect_column_values_to_not_be_null",
        ),
    ),
    "new_category": (
        _new_category,
        Expected(
            "validate",
            "encounters",
            "service_line",
            "expect_column_values_to_be_in_set",
        ),
    ),
    "empty_extract": (
        empty,
        Expected("ingest", "encounters", "*", "expect_table_row_count_to_be_between"),
    ),
}
