"""Gate suites generated from the data catalog, one per layer. Nothing here is hand-written per run.

- ingest (raw): the feed's contract: the declared columns, non-empty tables, castable types.
- validate (normalized): content: keys, allowed sets and code tables, physiologic ranges in the
  canonical unit, unit plausibility (medians), missingness, late data, clock/timezone consistency,
  EMPI duplicates.
- features: the feature set's own declared ranges, categories and nullability.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import pandas as pd

from hospital_mlops.data.catalog import ColumnSpec, Range, SourceSpec, TableSpec
from hospital_mlops.data.normalize import (
    FINGERPRINT,
    RECORDING_DELAY,
    WITHIN_WINDOW,
    normalized_name,
)
from hospital_mlops.features import FeatureSet
from hospital_mlops.validation.checks import Check

_CSV_PATTERNS = {
    "integer": r"^\s*-?\d+\s*$",
    "float": r"^\s*-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$",
    "timestamp": r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$",
    "date": r"^\d{4}-\d{2}-\d{2}$",
    "boolean": r"^(?i:true|false|0|1)$",
}
_INT_TYPES = ["int64", "int32", "int16", "int8", "Int64", "Int32", "uint32", "uint64"]
_PARQUET_TYPES = {
    "integer": _INT_TYPES,
    "float": ["float64", "float32", "Float64", *_INT_TYPES],
    "timestamp": [
        "datetime64[ns]",
        "datetime64[us]",
        "datetime64[ms]",
        "datetime64[ns, UTC]",
        "datetime64[us, UTC]",
        "datetime64[ms, UTC]",
    ],
    "date": ["datetime64[ns]", "datetime64[us]", "datetime64[ms]", "date32[day][pyarrow]"],
    "boolean": ["bool", "boolean"],
    "string": ["object", "string", "str"],
}
# Late data tolerates a small tail; clock errors (event after it was recorded) tolerate almost none.
LATE_DATA_MOSTLY = 0.99
CLOCK_MOSTLY = 0.999
CLOCK_TOLERANCE_HOURS = -0.25
WINDOW_MOSTLY = 0.99


def measurement_batch(table: str, code: str) -> str:
    return f"{table}[{code}]"


def split_measurement_batches(
    frames: Mapping[str, pd.DataFrame], spec: SourceSpec
) -> dict[str, pd.DataFrame]:
    """Long tables are checked per code (a glucose range is not a sodium range)."""
    batches = dict(frames)
    for tname, table in spec.tables.items():
        m = table.measurements
        if m is None or tname not in frames:
            continue
        df = frames[tname]
        for code in m.codes:
            batches[measurement_batch(tname, code)] = df[df[m.code_column] == code]
    return batches


def _range_check(batch: str, column: str, rng: Range, purpose: str) -> Check:
    return Check(
        batch,
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": rng.min, "max_value": rng.max, "mostly": rng.mostly},
        purpose,
    )


def raw_checks(spec: SourceSpec) -> list[Check]:
    checks: list[Check] = []
    for tname, table in spec.tables.items():
        checks.append(
            Check(
                tname,
                "ExpectTableColumnsToMatchSet",
                {"column_set": list(table.columns), "exact_match": True},
                "schema: the extract's columns are exactly the catalogued ones",
            )
        )
        if table.min_rows > 0:
            checks.append(
                Check(
                    tname,
                    "ExpectTableRowCountToBeBetween",
                    {"min_value": table.min_rows},
                    "the extract is not empty",
                )
            )
        for col, cspec in table.columns.items():
            checks.extend(_raw_type_checks(spec, tname, col, cspec))
        for col, rule in table.id_standardization.items():
            checks.append(
                Check(
                    tname,
                    "ExpectColumnValuesToMatchRegex",
                    # the same pattern without its capture group (GX only needs a match)
                    {"column": col, "regex": re.sub(r"\((?!\?)", "(?:", rule.digits_pattern)},
                    "identifier: every spelling carries the number normalize standardizes",
                    sensitive=True,
                )
            )
    return checks


def _raw_type_checks(spec: SourceSpec, tname: str, col: str, cspec: ColumnSpec) -> Iterable[Check]:
    sensitive = cspec.identifier is not None
    if spec.format == "csv":
        pattern = _CSV_PATTERNS.get(cspec.type)
        if pattern is None:
            return []
        return [
            Check(
                tname,
                "ExpectColumnValuesToMatchRegex",
                {"column": col, "regex": pattern},
                f"type: every value parses as {cspec.type}",
                sensitive=sensitive,
            )
        ]
    return [
        Check(
            tname,
            "ExpectColumnValuesToBeInTypeList",
            {"column": col, "type_list": _PARQUET_TYPES[cspec.type]},
            f"type: the column is stored as {cspec.type}",
            sensitive=sensitive,
        )
    ]


def _normalized_primary_key(table: TableSpec) -> list[str]:
    cols = []
    for col in table.primary_key:
        name = normalized_name(col, table.columns[col])
        if name is None:
            return []
        cols.append(name)
    return cols


def normalized_checks(spec: SourceSpec) -> list[Check]:
    checks: list[Check] = []
    ts = spec.timestamps
    for tname, table in spec.tables.items():
        if tname == "patient_merges":
            continue
        key = _normalized_primary_key(table)
        if len(key) == 1:
            checks.append(
                Check(
                    tname,
                    "ExpectColumnValuesToBeUnique",
                    {"column": key[0]},
                    "duplicates: one row per key after ID standardization",
                    sensitive=True,
                )
            )
        elif key:
            checks.append(
                Check(
                    tname,
                    "ExpectCompoundColumnsToBeUnique",
                    {"column_list": key},
                    "duplicates: one row per key after ID standardization",
                    sensitive=True,
                    columns=tuple(key),
                )
            )
        if table.person_fingerprint:
            checks.append(
                Check(
                    tname,
                    "ExpectColumnValuesToBeUnique",
                    {"column": FINGERPRINT},
                    "EMPI: one record per person (same name, birth date and sex under two MRNs "
                    "means an unmerged duplicate patient)",
                    sensitive=True,
                )
            )
        for col, cspec in table.columns.items():
            checks.extend(_column_content_checks(spec, tname, col, cspec))
        if table.measurements is not None:
            checks.extend(_measurement_checks(tname, table))
        if ts.event_time in table.columns and ts.recorded_time in table.columns:
            checks.extend(_timing_checks(spec, tname))
        if "admit_time" in table.columns and "discharge_time" in table.columns:
            checks.append(
                Check(
                    tname,
                    "ExpectColumnPairValuesAToBeGreaterThanB",
                    {
                        "column_A": "discharge_time",
                        "column_B": "admit_time",
                        "or_equal": True,
                        "mostly": 0.999,
                    },
                    "time: discharge is not before admission",
                    columns=("discharge_time", "admit_time"),
                )
            )
    return checks


def _column_content_checks(
    spec: SourceSpec, tname: str, col: str, cspec: ColumnSpec
) -> Iterable[Check]:
    name = normalized_name(col, cspec)
    if name is None:
        return
    sensitive = cspec.identifier is not None
    if cspec.max_missing < 1.0:
        yield Check(
            tname,
            "ExpectColumnValuesToNotBeNull",
            {"column": name, "mostly": round(1.0 - cspec.max_missing, 6)},
            f"missingness: at most {cspec.max_missing:.0%} missing",
            sensitive=sensitive,
        )
    if cspec.allowed is not None:
        yield Check(
            tname,
            "ExpectColumnValuesToBeInSet",
            {"column": name, "value_set": cspec.allowed},
            "allowed set: no category outside the catalog",
        )
    if cspec.code_table is not None:
        codes = sorted(int(k) for k in spec.code_tables[cspec.code_table])
        yield Check(
            tname,
            "ExpectColumnValuesToBeInSet",
            {"column": name, "value_set": codes},
            f"code table {cspec.code_table}: no code outside the catalog's table",
        )
    if cspec.range is not None:
        unit = f" ({cspec.unit})" if cspec.unit else ""
        yield _range_check(tname, name, cspec.range, f"range: physiologic/plausible range{unit}")
    if cspec.plausible_median is not None:
        low, high = cspec.plausible_median
        yield Check(
            tname,
            "ExpectColumnMedianToBeBetween",
            {"column": name, "min_value": low, "max_value": high},
            f"unit plausibility: median in the declared unit {cspec.unit or ''}".rstrip()
            + " (an undeclared unit change or level shift moves it)",
        )


def _measurement_checks(tname: str, table: TableSpec) -> Iterable[Check]:
    m = table.measurements
    assert m is not None
    for code, mspec in m.codes.items():
        batch = measurement_batch(tname, code)
        yield Check(
            batch,
            "ExpectColumnValuesToBeInSet",
            {"column": m.unit_column, "value_set": [mspec.canonical_unit]},
            f"unit: {mspec.name} ({mspec.loinc}) in {mspec.canonical_unit} after conversion "
            "(a unit the conversion table does not know)",
        )
        yield _range_check(
            batch,
            m.value_column,
            mspec.range,
            f"range: physiologic range of {mspec.name} in {mspec.canonical_unit}",
        )
        low, high = mspec.plausible_median
        yield Check(
            batch,
            "ExpectColumnMedianToBeBetween",
            {"column": m.value_column, "min_value": low, "max_value": high},
            f"unit plausibility: median {mspec.name} in {mspec.canonical_unit} (an undeclared unit "
            "change or assay shift moves it)",
        )


def _timing_checks(spec: SourceSpec, tname: str) -> Iterable[Check]:
    ts = spec.timestamps
    if ts.max_recording_delay_hours is not None:
        yield Check(
            tname,
            "ExpectColumnValuesToBeBetween",
            {
                "column": RECORDING_DELAY,
                "max_value": ts.max_recording_delay_hours,
                "mostly": LATE_DATA_MOSTLY,
            },
            f"late data: recorded within {ts.max_recording_delay_hours:g} h of the event",
        )
    yield Check(
        tname,
        "ExpectColumnValuesToBeBetween",
        {"column": RECORDING_DELAY, "min_value": CLOCK_TOLERANCE_HOURS, "mostly": CLOCK_MOSTLY},
        "clock/timezone: an observation is not recorded before it happened",
    )
    yield Check(
        tname,
        "ExpectColumnValuesToBeInSet",
        {"column": WITHIN_WINDOW, "value_set": [True], "mostly": WINDOW_MOSTLY},
        "clock/timezone: observations fall inside their encounter "
        f"(±{ts.observation_window_slack_hours:g} h)",
    )


FEATURES_BATCH = "features"


def feature_checks(feature_set: FeatureSet) -> list[Check]:
    """The feature set's own declarations, checked on the computed table before publish."""
    checks: list[Check] = [
        Check(
            FEATURES_BATCH,
            "ExpectTableColumnsToMatchSet",
            {"column_set": feature_set.columns, "exact_match": True},
            f"schema: exactly the columns of feature set {feature_set.name}",
        ),
        Check(
            FEATURES_BATCH,
            "ExpectTableRowCountToBeBetween",
            {"min_value": 1},
            "the feature table is not empty",
        ),
        Check(
            FEATURES_BATCH,
            "ExpectColumnValuesToBeUnique",
            {"column": "encounter_token"},
            "one row per encounter",
            sensitive=True,
        ),
        Check(
            FEATURES_BATCH,
            "ExpectColumnValuesToBeInSet",
            {"column": feature_set.label, "value_set": [0, 1]},
            "label is binary",
        ),
        Check(
            FEATURES_BATCH,
            "ExpectColumnValuesToNotBeNull",
            {"column": feature_set.label},
            "every row has a label",
        ),
    ]
    for f in feature_set.features:
        if not f.nullable:
            checks.append(
                Check(
                    FEATURES_BATCH,
                    "ExpectColumnValuesToNotBeNull",
                    {"column": f.name},
                    f"feature {f.name} is never missing",
                )
            )
        if f.kind == "categorical" and f.allowed is not None:
            checks.append(
                Check(
                    FEATURES_BATCH,
                    "ExpectColumnValuesToBeInSet",
                    {"column": f.name, "value_set": list(f.allowed)},
                    f"feature {f.name}: only declared categories",
                )
            )
        elif f.kind == "binary":
            checks.append(
                Check(
                    FEATURES_BATCH,
                    "ExpectColumnValuesToBeInSet",
                    {"column": f.name, "value_set": [0.0, 1.0]},
                    f"feature {f.name} is 0/1",
                )
            )
        elif f.min_value is not None or f.max_value is not None:
            checks.append(
                Check(
                    FEATURES_BATCH,
                    "ExpectColumnValuesToBeBetween",
                    {"column": f.name, "min_value": f.min_value, "max_value": f.max_value},
                    f"feature {f.name} within its declared range",
                )
            )
    return checks
