"""The second use case as declared (issue 22): post-acute care need, predicted at admission.

The use case loads beside the readmission one from config/use_case.yaml, every discharge
disposition the catalog knows is placed exactly once, the label follows those lists, and no
feature reads anything recorded after admission (the truncation test)."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.features.post_acute_diabetes130 import (
    ADMISSION_INPUTS,
    LABEL,
    admission_feature_row,
    post_acute_feature_set,
)
from hospital_mlops.features.served import jsonable
from hospital_mlops.paths import config_path
from hospital_mlops.use_case import UseCaseError, load_use_case, load_use_cases

USE_CASE = "post_acute_at_admission"
KEY = HmacKey(b"k" * 40, demo=False)
# normalization's own columns, and what the pipeline orders and keys encounters by
KEYS = ("encounter_token", "patient_token", "encounter_order")


@pytest.fixture(scope="module")
def case():
    return load_use_case(use_case=USE_CASE)


@pytest.fixture(scope="module")
def encounters(catalog, d130_small) -> pd.DataFrame:
    spec = catalog.source("diabetes130")
    return normalize_extract(read_extract(d130_small, spec), spec, KEY)[0]["encounters"]


def test_both_use_cases_load_and_the_first_stays_the_default(case) -> None:
    cases = load_use_cases()
    assert list(cases) == ["readmission_30d_discharge", USE_CASE]
    assert load_use_case().id == "readmission_30d_discharge"
    assert case.label.name == LABEL
    # gates declared before the first evaluation, with the day they were declared
    assert case.gates_declared_on == date(2026, 12, 6)
    gates = case.for_source("diabetes130").gates
    assert gates.min_auroc_lower_bound == 0.70 and gates.must_beat_comparator


def test_an_unknown_or_repeated_use_case_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(UseCaseError, match="no use case 'triage'; declared: readmission"):
        load_use_case(use_case="triage")
    text = config_path("use_case.yaml").read_text()
    first = text.split("\n---\n")[0]
    twice = tmp_path / "use_case.yaml"
    twice.write_text(first + "\n---\n" + first)
    with pytest.raises(UseCaseError, match="'readmission_30d_discharge' is declared twice"):
        load_use_cases(twice)


def test_the_worklist_threshold_comes_from_case_managements_capacity(case, tmp_path) -> None:
    use = case.thresholds.uses[case.thresholds.primary]
    assert use.capacity is not None
    assert use.alerts_per_100 == pytest.approx(100 * 5 / 28)
    text = config_path("use_case.yaml").read_text().split("\n---\n")[1]
    both = text.replace(
        "capacity: {worklist_size: 5, admissions_per_day: 28}",
        "capacity: {worklist_size: 5, admissions_per_day: 28}\n      alerts_per_100: 10",
    )
    assert both != text
    (tmp_path / "use_case.yaml").write_text(both)
    with pytest.raises(UseCaseError, match="alerts_per_100 or capacity, not both"):
        load_use_cases(tmp_path / "use_case.yaml")


def test_every_discharge_disposition_is_placed_exactly_once(case, catalog) -> None:
    codes = case.label.codes
    assert codes is not None and codes.column == "discharge_disposition_id"
    table = {int(c) for c in catalog.source("diabetes130").code_tables["discharge_disposition_id"]}
    assert codes.all_codes() == table
    # deaths and hospice are outside the intended use, as in the readmission use case
    assert {11, 13, 14, 19, 20, 21} == set(codes.outside_intended_use)


def test_a_code_in_two_lists_is_refused(tmp_path: Path) -> None:
    text = config_path("use_case.yaml").read_text().split("\n---\n")[1]
    doubled = text.replace("negative: [1]", "negative: [1, 3]")
    assert doubled != text
    (tmp_path / "use_case.yaml").write_text(doubled)
    with pytest.raises(UseCaseError, match="code 3 is in both positive and negative"):
        load_use_cases(tmp_path / "use_case.yaml")


def test_the_label_follows_the_declared_codes(case, encounters) -> None:
    fs = post_acute_feature_set(case.label.codes)
    frame, stats = fs.compute({"encounters": encounters})
    codes = case.label.codes
    disposition = encounters.set_index("encounter_token").loc[
        frame["encounter_token"], "discharge_disposition_id"
    ]
    assert set(disposition[frame[LABEL].to_numpy() == 1]) <= set(codes.positive)
    assert set(disposition[frame[LABEL].to_numpy() == 0]) <= set(codes.negative)
    dropped = (
        stats["excluded_outside_intended_use"]
        + stats["excluded_ambiguous_disposition"]
        + stats["excluded_unplaced_disposition"]
    )
    assert stats["encounters_in"] - dropped == len(frame)
    assert (
        stats["excluded_outside_intended_use"] > 0 and stats["excluded_ambiguous_disposition"] > 0
    )
    assert 0.15 < frame[LABEL].mean() < 0.6  # a plausible post-acute share, not a broken map
    assert list(frame.columns) == fs.columns


def test_no_feature_reads_anything_recorded_after_admission(case, encounters) -> None:
    """The truncation test: every column outside ADMISSION_INPUTS (the stay's counts, length of
    stay, labs, medications, diagnoses, the disposition) is replaced by noise; every feature of
    every encounter stays the same."""
    fs = post_acute_feature_set(case.label.codes)
    rng = np.random.default_rng(3)
    noisy = encounters.copy()
    later = [
        c
        for c in encounters.columns
        if c not in ADMISSION_INPUTS and c not in KEYS and c != case.label.codes.column
    ]
    assert {"time_in_hospital", "num_medications", "diag_1", "A1Cresult", "insulin"} <= set(later)
    for column in later:
        noisy[column] = rng.permutation(noisy[column].to_numpy())
    before, _ = fs.compute({"encounters": encounters})
    after, _ = fs.compute({"encounters": noisy})
    names = [f.name for f in fs.features]
    pd.testing.assert_frame_equal(before[names], after[names])
    # and the test can fail: noise in an admission input does change a feature
    noisy["number_inpatient"] = rng.permutation(noisy["number_inpatient"].to_numpy())
    changed, _ = fs.compute({"encounters": noisy})
    assert not before["inpatient_admissions_prior_year"].equals(
        changed["inpatient_admissions_prior_year"]
    )


def test_the_row_path_equals_the_frame_path_on_real_encounters(case, encounters) -> None:
    fs = post_acute_feature_set(case.label.codes)
    frame, _ = fs.compute({"encounters": encounters})
    rows = encounters.set_index("encounter_token").loc[frame["encounter_token"].head(2000)]
    names = [f.name for f in fs.features]
    for (_, raw), (_, expected) in zip(rows.iterrows(), frame.head(2000).iterrows(), strict=True):
        row = {c: jsonable(raw[c]) for c in ADMISSION_INPUTS}
        got = admission_feature_row(row, int(expected["earlier_encounters_in_extract"]))
        for name in names:
            want = expected[name]
            if isinstance(want, float) and math.isnan(want):
                assert isinstance(got[name], float) and math.isnan(got[name]), name
            else:
                assert got[name] == want, (name, got[name], want)


def test_the_codes_are_part_of_the_version(case) -> None:
    codes = case.label.codes
    moved = codes.model_copy(
        update={"positive": [c for c in codes.positive if c != 6], "negative": [1, 6]}
    )
    assert post_acute_feature_set(codes).version == post_acute_feature_set(codes).version
    assert post_acute_feature_set(codes).version != post_acute_feature_set(moved).version
    assert post_acute_feature_set(codes).version.startswith("post_acute_diabetes130@")


def test_the_evidence_says_when_the_gates_were_declared(case) -> None:
    declared = case.gates_declared_on
    assert case.gates_declaration(date(2026, 12, 7)) == {
        "gates_declared_on": "2026-12-06",
        "gates_declared": "before the evaluation",
    }
    assert case.gates_declaration(declared)["gates_declared"] == "on the evaluation's day"
    assert case.gates_declaration(date(2026, 12, 1))["gates_declared"] == (
        "after the evaluation (post hoc)"
    )
    # the readmission use case did not record the day: said, never guessed
    assert load_use_case().gates_declaration(date(2026, 12, 7)) == {
        "gates_declared_on": None,
        "gates_declared": "not recorded",
    }


def test_each_use_case_reads_its_data_under_its_own_permitted_purpose(catalog) -> None:
    """A run's catalog use defaults to its use case's declared purpose, and the catalog permits
    that purpose on every source the use case declares (else the run is refused at ingest)."""
    from hospital_mlops.use_case import load_use_cases, purpose_of

    cases = load_use_cases()
    assert {c.purpose for c in cases.values()} == {"readmission_risk_model", "post_acute_planning"}
    for case in cases.values():
        assert case.purpose is not None
        for source in case.sources:
            catalog.require_use(source, case.purpose)
    assert purpose_of(None, None) == "readmission_risk_model"
    assert purpose_of(None, "post_acute_at_admission") == "post_acute_planning"
    assert purpose_of("quality_improvement", "post_acute_at_admission") == "quality_improvement"
