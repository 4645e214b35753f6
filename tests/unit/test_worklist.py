"""The daily worklist (issue 22): the top of a census by risk, each with its reasons, as CSV and
as one self-contained page; a census that cannot be scored is refused by name."""

from __future__ import annotations

import csv
import io

import pandas as pd
import pytest

from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.data.splits import temporal_split
from hospital_mlops.features import feature_set_for
from hospital_mlops.inference.worklist import (
    WorklistError,
    build_worklist,
    worklist_csv,
    worklist_html,
)
from hospital_mlops.model.train import train_risk_model
from hospital_mlops.use_case import TrainingConfig, load_use_case
from tests.html_checks import is_self_contained

USE_CASE = "post_acute_at_admission"


@pytest.fixture(scope="module")
def trained(catalog, d130_small):
    spec = catalog.source("diabetes130")
    tables = normalize_extract(read_extract(d130_small, spec), spec, HmacKey(b"k" * 40, False))[0]
    fs = feature_set_for("diabetes130", USE_CASE)
    frame, _ = fs.compute(tables)
    policy = load_use_case(use_case=USE_CASE).for_source("diabetes130").split
    split = temporal_split(frame, policy, fs.label)
    model = train_risk_model(split.train, split.validation, fs, TrainingConfig(max_rounds=60))
    return model, fs, split.test.reset_index(drop=True)


def test_the_list_is_the_top_of_the_census_by_risk_with_reasons(trained) -> None:
    model, fs, census = trained
    day = census.head(28)
    worklist = build_worklist(day, model, fs, 5, day="day 1", model_name="post-acute/1")
    entries = worklist.entries
    assert list(entries["rank"]) == [1, 2, 3, 4, 5] and worklist.census == 28
    risks = model.predict_risk(day, fs)
    assert entries["risk"].tolist() == pytest.approx(sorted(risks, reverse=True)[:5])
    assert entries["risk"].is_monotonic_decreasing
    assert all(1 <= len(r) <= 3 for r in entries["reasons"])
    assert any("raises the risk" in text for r in entries["reasons"] for text in r)
    # the same census, shuffled, gives the same list
    again = build_worklist(
        day.sample(frac=1, random_state=1), model, fs, 5, day="day 1", model_name="post-acute/1"
    )
    pd.testing.assert_frame_equal(again.entries, entries)


def test_csv_and_page(trained) -> None:
    model, fs, census = trained
    worklist = build_worklist(census.head(28), model, fs, 5, day="day 1", model_name="m/1")
    rows = list(csv.DictReader(io.StringIO(worklist_csv(worklist))))
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert rows[0]["encounter_token"] == worklist.entries.at[0, "encounter_token"]
    assert float(rows[0]["risk"]) == pytest.approx(worklist.entries.at[0, "risk"], abs=1e-4)
    assert rows[0]["reason_1"]
    page = worklist_html(worklist, "Discharge-planning worklist")
    assert is_self_contained(page) and page.startswith("<!DOCTYPE html>")
    # the small-cell rule: 5 listed of 28 scored; 5 is a small count and is not printed
    assert "&lt;11 highest risks of 28 admissions" in page


def test_a_census_that_cannot_be_scored_is_refused_by_name(trained) -> None:
    model, fs, census = trained
    with pytest.raises(WorklistError, match=r"lacks the columns \['payer'\]"):
        build_worklist(census.drop(columns=["payer"]), model, fs, 5, day="d", model_name="m")
    with pytest.raises(WorklistError, match="capacity must be at least 1"):
        build_worklist(census, model, fs, 0, day="d", model_name="m")
    readmission = feature_set_for("diabetes130")
    with pytest.raises(WorklistError, match="trained on post_acute_diabetes130@"):
        build_worklist(census, model, readmission, 5, day="d", model_name="m")
    empty = build_worklist(census.head(0), model, fs, 5, day="d", model_name="m")
    assert empty.census == 0 and empty.entries.empty
