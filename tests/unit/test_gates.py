from __future__ import annotations

import pandas as pd

from hospital_mlops.validation import suites
from hospital_mlops.validation.checks import Check
from hospital_mlops.validation.gx_runner import run_gate


def test_suites_are_generated_from_the_catalog(catalog) -> None:
    d130 = catalog.source("diabetes130")
    raw = suites.raw_checks(d130)
    regex = [c for c in raw if c.expectation == "ExpectColumnValuesToMatchRegex"]
    integer_cols = [c for c, s in d130.tables["encounters"].columns.items() if s.type == "integer"]
    assert {c.kwargs["column"] for c in regex} == set(integer_cols)
    norm = suites.normalized_checks(d130)
    ranged = {c.kwargs["column"] for c in norm if c.expectation == "ExpectColumnValuesToBeBetween"}
    expected = {c for c, s in d130.tables["encounters"].columns.items() if s.range}
    assert ranged == expected
    syn = suites.normalized_checks(catalog.source("synthetic"))
    batches = {c.batch for c in syn}
    assert {"labs[GLU]", "labs[CREAT]", "labs[HBA1C]", "labs[NA]", "labs[HGB]"} <= batches
    assert any(c.kwargs.get("column") == "person_fingerprint" for c in syn)


def test_a_failure_names_table_column_expectation_and_observed_value() -> None:
    frame = pd.DataFrame({"hr": [70.0, 80.0, 400.0], "mrn": ["MRN1", "MRN1", "MRN2"]})
    checks = [
        Check(
            "vitals",
            "ExpectColumnValuesToBeBetween",
            {"column": "hr", "min_value": 20, "max_value": 250},
            "range",
        ),
        Check("vitals", "ExpectColumnValuesToBeUnique", {"column": "mrn"}, "dups", sensitive=True),
        Check("vitals", "ExpectColumnValuesToNotBeNull", {"column": "absent"}, "skipped"),
    ]
    result = run_gate(
        source="s", layer="validate", name="n", frames={"vitals": frame}, checks=checks
    )
    assert not result.success and result.checks_run == 2
    hr = next(f for f in result.failures if f.column == "hr")
    assert hr.expectation == "expect_column_values_to_be_between"
    assert "1 of 3 rows" in hr.observed and "max 400" in hr.observed
    mrn = next(f for f in result.failures if f.column == "mrn")
    assert "MRN1" not in mrn.observed  # identifier values are never echoed
    assert "source 's'" in result.headline() and "observed" in result.headline()


def test_a_clean_batch_passes() -> None:
    frame = pd.DataFrame({"hr": [70.0, 80.0]})
    check = Check(
        "v",
        "ExpectColumnMedianToBeBetween",
        {"column": "hr", "min_value": 60, "max_value": 110},
        "median",
    )
    result = run_gate(source="s", layer="validate", name="n", frames={"v": frame}, checks=[check])
    assert result.success and result.outcomes[0].observed == "75"


def test_unparseable_identifier_fails_the_raw_gate_without_echoing_it(catalog) -> None:
    spec = catalog.source("synthetic")
    checks = [
        c
        for c in suites.raw_checks(spec)
        if c.batch == "vitals" and c.sensitive and c.expectation == "ExpectColumnValuesToMatchRegex"
    ]
    assert len(checks) == 1 and checks[0].kwargs["column"] == "encounter_id"
    frame = pd.DataFrame({"encounter_id": ["ENC-00000001", "enc2", "ENC-UNKNOWN"]})
    result = run_gate(
        source="synthetic", layer="ingest", name="raw", frames={"vitals": frame}, checks=checks
    )
    assert not result.success
    assert "1 of 3 rows" in result.failures[0].observed
    assert "UNKNOWN" not in result.failures[0].observed
