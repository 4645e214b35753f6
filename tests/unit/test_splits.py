from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.splits import (
    SplitError,
    SplitLeakage,
    era_labels,
    extra_slices,
    temporal_split,
)
from hospital_mlops.use_case import SplitPolicy


def _frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2024-01-01", tz="UTC")
    return pd.DataFrame(
        {
            "patient_token": rng.integers(0, n // 3, n).astype(str),
            "discharge_time": start + pd.to_timedelta(rng.uniform(0, 730, n), unit="D"),
            "encounter_order": rng.permutation(n),
            "readmitted_30d": rng.binomial(1, 0.12, n),
            "site": rng.choice(["NORTH", "EAST"], n),
        }
    )


def _policy(**kw) -> SplitPolicy:
    base = {
        "time_column": "discharge_time",
        "axis": "time",
        "fractions": {"train": 0.6, "validation": 0.2, "test": 0.2},
        "label_window": 30,
        "embargo": 30,
    }
    return SplitPolicy.model_validate({**base, **kw})


def test_periods_follow_time_with_the_embargo_between_them() -> None:
    split = temporal_split(_frame(), _policy(), "readmitted_30d")
    train_end = split.train["discharge_time"].max()
    valid_start, valid_end = split.validation["discharge_time"].agg(["min", "max"])
    test_start = split.test["discharge_time"].min()
    assert train_end + pd.Timedelta(days=30) < valid_start
    assert valid_end + pd.Timedelta(days=30) < test_start
    assert split.embargoed_rows > 0
    periods = {p["period"]: p for p in split.summary}
    assert sum(p["rows"] for p in split.summary) + split.embargoed_rows == 3000
    assert periods["test"]["patients_also_in_train"] > 0  # patients recur, and it is reported
    assert 0 < periods["train"]["event_rate"] < 1


def test_order_axis_uses_encounter_counts() -> None:
    policy = _policy(time_column="encounter_order", axis="order", label_window=40, embargo=50)
    split = temporal_split(_frame(), policy, "readmitted_30d")
    assert split.train["encounter_order"].max() + 50 <= split.validation["encounter_order"].min()
    assert split.summary[0]["start"] == 0


def test_an_embargo_shorter_than_the_label_window_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than the label window"):
        _policy(embargo=5)
    # and, defence in depth, on the actual periods (a policy built without validation)
    unchecked = SplitPolicy.model_construct(**{**_policy().__dict__, "embargo": 5})
    with pytest.raises(SplitLeakage, match="label window is 30 days"):
        temporal_split(_frame(), unchecked, "readmitted_30d")


def test_empty_single_class_and_missing_columns_are_refused() -> None:
    frame = _frame()
    with pytest.raises(SplitError, match="single class"):
        temporal_split(frame.assign(readmitted_30d=0), _policy(), "readmitted_30d")
    late = frame.assign(discharge_time=pd.Timestamp("2024-01-01", tz="UTC"))
    with pytest.raises(SplitError, match="empty"):
        temporal_split(late, _policy(), "readmitted_30d")
    with pytest.raises(SplitError, match="split column"):
        temporal_split(frame.drop(columns="discharge_time"), _policy(), "readmitted_30d")
    with pytest.raises(SplitError, match="extra slice column 'ward'"):
        extra_slices(frame, ["ward"])
    assert set(extra_slices(frame, ["site"])) == {"site=EAST", "site=NORTH"}


def test_fractions_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="must be 1"):
        _policy(fractions={"train": 0.6, "validation": 0.3, "test": 0.2})


def test_era_slices_are_calendar_quarters_of_the_time_axis() -> None:
    frame = _frame()
    split = temporal_split(frame, _policy(), "readmitted_30d")
    eras = era_labels(split.test, _policy())
    assert eras.str.fullmatch(r"20\d\dQ[1-4]").all() and eras.nunique() >= 2
    first = split.test["discharge_time"].idxmin()
    assert eras[first] == f"{split.test['discharge_time'][first].year}Q" + str(
        split.test["discharge_time"][first].quarter
    )
    order = _policy(time_column="encounter_order", axis="order", label_window=40, embargo=50)
    with pytest.raises(SplitError, match="per-era slices need a time axis"):
        era_labels(split.test, order)
