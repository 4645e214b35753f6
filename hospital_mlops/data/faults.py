"""Named fault scenarios: the things real hospital feeds do, injected into a clean extract.

Each scenario rewrites an extract into a new one (like a bad delivery would arrive) and declares
where the pipeline must catch it and on which table and column. Tests run every scenario through
the pipeline and hold it to that declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import SourceSpec
from hospital_mlops.data.snapshots import sha256_path
from hospital_mlops.data.sources.extract import read_extract, write_csv_extract

Tables = dict[str, pd.DataFrame]
Injector = Callable[[Tables, np.random.Generator], Tables]


class UnknownScenario(ValueError):
    pass


@dataclass(frozen=True)
class Expected:
    """Where a scenario must be caught: layer, table (batch) and column of the first failure."""

    layer: str
    table: str
    column: str
    expectation: str


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    caught_at: str
    sources: dict[str, tuple[Injector, Expected]]


def _rows(df: pd.DataFrame, rng: np.random.Generator, fraction: float) -> np.ndarray:
    n = max(1, round(len(df) * fraction))
    return np.sort(rng.choice(len(df), size=min(n, len(df)), replace=False))


def _with(tables: Tables, **changes: pd.DataFrame) -> Tables:
    return {**tables, **changes}


# --- synthetic injectors (typed parquet tables) ------------------------------------------------


def _syn_unit_change(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    glu = (labs["lab_code"] == "GLU") & (labs["unit"] == "mg/dL")
    labs.loc[glu, "value"] = (labs.loc[glu, "value"] / 18.016).round(1)  # SI, still "mg/dL"
    return _with(t, labs=labs)


def _syn_assay_shift(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    creat = labs["lab_code"] == "CREAT"
    si = creat & (labs["unit"] == "umol/L")
    labs.loc[creat & ~si, "value"] = labs.loc[creat & ~si, "value"] + 0.6
    labs.loc[si, "value"] = labs.loc[si, "value"] + 0.6 / 0.01131
    return _with(t, labs=labs)


def _respell(ids: pd.Series) -> pd.Series:
    digits = ids.astype(str).str.extract(r"(\d+)", expand=False).astype(int)
    return digits.map(lambda d: f"enc{d}")


def _syn_duplicates(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"]
    dup = enc.iloc[_rows(enc, rng, 0.02)].copy()
    dup["encounter_id"] = _respell(dup["encounter_id"])  # same encounter, another spelling
    return _with(t, encounters=pd.concat([enc, dup], ignore_index=True))


def _syn_late(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    idx = _rows(labs, rng, 0.05)
    delay = pd.to_timedelta(rng.uniform(5, 15, size=len(idx)), unit="D")
    labs.loc[labs.index[idx], "recorded_time"] = labs["recorded_time"].iloc[idx] + delay
    return _with(t, labs=labs)


def _syn_retype(t: Tables, rng: np.random.Generator) -> Tables:
    labs = t["labs"].copy()
    labs["value"] = labs["value"].map(lambda v: f"{v:g} " if pd.notna(v) else None)
    return _with(t, labs=labs)


def _syn_out_of_range(t: Tables, rng: np.random.Generator) -> Tables:
    vitals = t["vitals"].copy()
    idx = vitals.index[_rows(vitals, rng, 0.01)]
    vitals.loc[idx, "heart_rate"] = 400.0
    return _with(t, vitals=vitals)


def _syn_timezone(t: Tables, rng: np.random.Generator) -> Tables:
    """NORTH's monitors send local wall-clock time labelled as UTC after a gateway update."""
    vitals = t["vitals"].copy()
    enc = t["encounters"]
    north = set(enc.loc[enc["site"] == "NORTH", "encounter_id"])
    rows = vitals["encounter_id"].isin(north)
    vitals.loc[rows, "event_time"] = vitals.loc[rows, "event_time"] + pd.Timedelta(hours=5)
    return _with(t, vitals=vitals)


def _syn_patient_merge(t: Tables, rng: np.random.Generator) -> Tables:
    """The EMPI merge list did not arrive: duplicate registrations stay two 'patients'."""
    return _with(t, patient_merges=t["patient_merges"].iloc[0:0])


def _syn_null_burst(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc.loc[enc["site"] == "EAST", "primary_dx"] = None
    return _with(t, encounters=enc)


def _syn_new_category(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc.loc[enc.index[_rows(enc, rng, 0.02)], "service_line"] = "TELEMETRY"
    return _with(t, encounters=enc)


def _renamed(table: str, old: str, new: str) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        return _with(t, **{table: t[table].rename(columns={old: new})})

    return inject


def _dropped(table: str, column: str) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        return _with(t, **{table: t[table].drop(columns=[column])})

    return inject


def _empty(t: Tables, rng: np.random.Generator) -> Tables:
    return {name: df.iloc[0:0] for name, df in t.items()}


# --- diabetes130 injectors (raw CSV text) --------------------------------------------------------


def _d130_column(column: str, fn: Callable[[pd.Series], pd.Series], fraction: float) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        enc = t["encounters"].copy()
        idx = enc.index[_rows(enc, rng, fraction)]
        enc.loc[idx, column] = fn(enc.loc[idx, column])
        return _with(t, encounters=enc)

    return inject


def _d130_duplicates(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"]
    dup = enc.iloc[_rows(enc, rng, 0.01)].copy()
    dup["encounter_id"] = "0" + dup["encounter_id"].astype(str)  # zero-padded resend
    return _with(t, encounters=pd.concat([enc, dup], ignore_index=True))


def _d130_assay(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc["num_lab_procedures"] = (enc["num_lab_procedures"].astype(int) + 30).astype(str)
    return _with(t, encounters=enc)


def _d130_retype(t: Tables, rng: np.random.Generator) -> Tables:
    enc = t["encounters"].copy()
    enc["time_in_hospital"] = enc["time_in_hospital"].astype(str) + " days"
    return _with(t, encounters=enc)


_E = Expected
SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "unit_change",
            "glucose sent in mmol/L but still labelled mg/dL (undeclared unit change)",
            "validate",
            {
                "synthetic": (
                    _syn_unit_change,
                    _E("validate", "labs[GLU]", "value", "expect_column_median_to_be_between"),
                )
            },
        ),
        Scenario(
            "assay_shift",
            "a recalibrated assay reads creatinine +0.6 mg/dL high (diabetes130: lab count +30)",
            "validate",
            {
                "synthetic": (
                    _syn_assay_shift,
                    _E("validate", "labs[CREAT]", "value", "expect_column_median_to_be_between"),
                ),
                "diabetes130": (
                    _d130_assay,
                    _E(
                        "validate",
                        "encounters",
                        "num_lab_procedures",
                        "expect_column_median_to_be_between",
                    ),
                ),
            },
        ),
        Scenario(
            "diagnoses_truncated",
            "an interface upgrade sends only the principal diagnosis (diagnosis count 1)",
            "validate",
            {
                "diabetes130": (
                    _d130_column("number_diagnoses", lambda s: s.map(lambda _: "1"), 1.0),
                    _E(
                        "validate",
                        "encounters",
                        "number_diagnoses",
                        "expect_column_median_to_be_between",
                    ),
                ),
            },
        ),
        Scenario(
            "duplicates",
            "encounters resent with a different ID spelling (duplicates behind formatting)",
            "validate",
            {
                "synthetic": (
                    _syn_duplicates,
                    _E(
                        "validate",
                        "encounters",
                        "encounter_token",
                        "expect_column_values_to_be_unique",
                    ),
                ),
                "diabetes130": (
                    _d130_duplicates,
                    _E(
                        "validate",
                        "encounters",
                        "encounter_token",
                        "expect_column_values_to_be_unique",
                    ),
                ),
            },
        ),
        Scenario(
            "late_arriving",
            "5% of lab results reach the EHR 5-15 days after collection",
            "validate",
            {
                "synthetic": (
                    _syn_late,
                    _E(
                        "validate",
                        "labs",
                        "recording_delay_hours",
                        "expect_column_values_to_be_between",
                    ),
                )
            },
        ),
        Scenario(
            "schema_rename",
            "a column is renamed in the feed (heart_rate→hr; A1Cresult→a1c_result)",
            "ingest",
            {
                "synthetic": (
                    _renamed("vitals", "heart_rate", "hr"),
                    _E("ingest", "vitals", "*", "expect_table_columns_to_match_set"),
                ),
                "diabetes130": (
                    _renamed("encounters", "A1Cresult", "a1c_result"),
                    _E("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
                ),
            },
        ),
        Scenario(
            "schema_drop",
            "a column disappears from the feed",
            "ingest",
            {
                "synthetic": (
                    _dropped("encounters", "discharge_disposition"),
                    _E("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
                ),
                "diabetes130": (
                    _dropped("encounters", "max_glu_serum"),
                    _E("ingest", "encounters", "*", "expect_table_columns_to_match_set"),
                ),
            },
        ),
        Scenario(
            "schema_retype",
            "a numeric column arrives as text ('7.2 ', '3 days')",
            "ingest",
            {
                "synthetic": (
                    _syn_retype,
                    _E("ingest", "labs", "value", "expect_column_values_to_be_in_type_list"),
                ),
                "diabetes130": (
                    _d130_retype,
                    _E(
                        "ingest",
                        "encounters",
                        "time_in_hospital",
                        "expect_column_values_to_match_regex",
                    ),
                ),
            },
        ),
        Scenario(
            "out_of_range",
            "impossible values (heart rate 400/min; length of stay 45 days)",
            "validate",
            {
                "synthetic": (
                    _syn_out_of_range,
                    _E("validate", "vitals", "heart_rate", "expect_column_values_to_be_between"),
                ),
                "diabetes130": (
                    _d130_column("time_in_hospital", lambda s: s.map(lambda _: "45"), 0.01),
                    _E(
                        "validate",
                        "encounters",
                        "time_in_hospital",
                        "expect_column_values_to_be_between",
                    ),
                ),
            },
        ),
        Scenario(
            "timezone_shift",
            "one site's monitors send local time labelled UTC (events after they were recorded)",
            "validate",
            {
                "synthetic": (
                    _syn_timezone,
                    _E(
                        "validate",
                        "vitals",
                        "recording_delay_hours",
                        "expect_column_values_to_be_between",
                    ),
                )
            },
        ),
        Scenario(
            "patient_merge",
            "the EMPI merge list is missing: one person stays two MRNs",
            "validate",
            {
                "synthetic": (
                    _syn_patient_merge,
                    _E(
                        "validate",
                        "patients",
                        "person_fingerprint",
                        "expect_column_values_to_be_unique",
                    ),
                )
            },
        ),
        Scenario(
            "null_burst",
            "a field goes blank for a whole site or slice (diagnosis at EAST; race for 20%)",
            "validate",
            {
                "synthetic": (
                    _syn_null_burst,
                    _E(
                        "validate",
                        "encounters",
                        "primary_dx",
                        "expect_column_values_to_not_be_null",
                    ),
                ),
                "diabetes130": (
                    _d130_column("race", lambda s: s.map(lambda _: None), 0.2),
                    _E("validate", "encounters", "race", "expect_column_values_to_not_be_null"),
                ),
            },
        ),
        Scenario(
            "new_category",
            "a category the catalog does not know (service line TELEMETRY; admission source 99)",
            "validate",
            {
                "synthetic": (
                    _syn_new_category,
                    _E(
                        "validate",
                        "encounters",
                        "service_line",
                        "expect_column_values_to_be_in_set",
                    ),
                ),
                "diabetes130": (
                    _d130_column("admission_source_id", lambda s: s.map(lambda _: "99"), 0.01),
                    _E(
                        "validate",
                        "encounters",
                        "admission_source_id",
                        "expect_column_values_to_be_in_set",
                    ),
                ),
            },
        ),
        Scenario(
            "empty_extract",
            "the delivery has headers and no rows",
            "ingest",
            {
                "synthetic": (
                    _empty,
                    _E("ingest", "encounters", "*", "expect_table_row_count_to_be_between"),
                ),
                "diabetes130": (
                    _empty,
                    _E("ingest", "encounters", "*", "expect_table_row_count_to_be_between"),
                ),
            },
        ),
    )
}


def scenario(name: str, source: str) -> tuple[Injector, Expected]:
    if name not in SCENARIOS:
        raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    s = SCENARIOS[name]
    if source not in s.sources:
        raise UnknownScenario(
            f"scenario {name!r} does not apply to source {source!r} (it applies to "
            f"{sorted(s.sources)}): the source has no such field"
        )
    return s.sources[source]


def materialize_scenario(
    name: str, source: str, spec: SourceSpec, extract: Path, root: Path, seed: int = 7
) -> Path:
    """Write the faulty extract next to the clean one and return its path (deterministic)."""
    inject, _ = scenario(name, source)
    target = root / f"{source}-{name}-{sha256_path(extract)[:12]}-s{seed}"
    if target.exists():
        return target
    staging = root / f".staging-{target.name}"
    tables = inject(read_extract(extract, spec), np.random.default_rng(seed))
    if spec.format == "csv":
        write_csv_extract(tables, spec, staging)
    else:
        from hospital_mlops.data.sources.synthetic.parquet_extract import write_tables

        write_tables(tables, staging, {"scenario": name, "parent_extract": str(extract)})
    staging.rename(target)
    return target
