"""The act tier's fixed rules (drift/data_faults.py): broken feeds are named with the rule and the
observed value, and ordinary weeks, each with its own case mix, never trip them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.drift.data_faults import FaultRules, ReferenceProfile, data_faults, silent_feed
from tests.unit.test_drift_thresholds import KINDS, _week


@pytest.fixture(scope="module")
def profile() -> ReferenceProfile:
    rng = np.random.default_rng(1)
    reference = pd.concat([_week(rng) for _ in range(20)], ignore_index=True)
    return ReferenceProfile.of(reference, KINDS)


def test_ordinary_weeks_trip_no_rule(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(2)
    tripped = [f for _ in range(300) for f in data_faults(_week(rng), KINDS, profile)]
    assert tripped == []


@pytest.mark.parametrize(
    ("fault", "input_", "rule"),
    [
        ({"labs_scale": 18.0}, "labs", "unit_change"),  # mmol/L read as mg/dL
        ({"missing_stay": 1.0}, "stay", "input_missing"),
        ({"recoded": 1.0}, "source", "new_category"),
    ],
)
def test_a_broken_feed_is_named_with_its_rule_and_value(
    profile: ReferenceProfile, fault: dict[str, float], input_: str, rule: str
) -> None:
    rng = np.random.default_rng(3)
    (found,) = data_faults(_week(rng, **fault), KINDS, profile)
    assert (found.input, found.rule) == (input_, rule)
    assert found.observed >= found.limit and input_ in found.detail


def test_the_rules_edges(profile: ReferenceProfile) -> None:
    rng = np.random.default_rng(5)
    week = _week(rng)
    week.loc[week.index[:30], "source"] = "ED"  # 3%: an odd code, not a changed table
    assert data_faults(week, KINDS, profile) == []
    week.loc[week.index[:60], "source"] = "ED"  # 6%
    (found,) = data_faults(week, KINDS, profile)
    assert found.rule == "new_category" and found.observed == pytest.approx(0.06)
    assert "categories the reference never had: ED" in found.detail
    shifted = _week(rng)
    shifted["labs"] = shifted["labs"] + 500  # outside the reference's range, median ×12
    (unit,) = data_faults(shifted, KINDS, profile)
    assert unit.rule == "unit_change" and unit.observed > 10


def test_a_silent_feed_is_a_window_far_below_the_baselines_rate() -> None:
    assert silent_feed(120, 168, 6.0) is None  # 12% of the expected 1,008
    quiet = silent_feed(90, 168, 6.0)
    assert quiet is not None and quiet.rule == "silent_feed"
    assert quiet.detail == "90 encounters in 168 h where the baseline's rate expects 1008"
    with pytest.raises(ValueError, match="must be positive"):
        silent_feed(10, 0, 6.0)


def test_bad_rules_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match=r"new_category_share 0: must be in \(0, 1\]"):
        FaultRules(new_category_share=0)
    with pytest.raises(ValueError, match=r"unit_factor 1\.0: must be above 1"):
        FaultRules(unit_factor=1.0)


def test_refused_requests_name_the_fields_most_refused() -> None:
    from hospital_mlops.drift.data_faults import refused_requests

    assert refused_requests(1000, {}) is None
    assert refused_requests(1000, {"admission_source_id": 4}) is None  # 0.4%
    found = refused_requests(950, {"admission_source_id": 40, "time_in_hospital": 10})
    assert found is not None and found.rule == "requests_refused"
    assert found.observed == pytest.approx(0.05)
    assert found.detail.index("admission_source_id (40)") < found.detail.index("time_in_hospital")


def test_repeated_encounters_count_rows_already_scored_in_the_window() -> None:
    from hospital_mlops.drift.data_faults import repeated_encounters

    keys = pd.Series([f"t{i}" for i in range(1000)])
    assert repeated_encounters(keys) is None
    assert repeated_encounters(pd.concat([keys, keys[:2]])) is None  # 2 in 1,002: a retry or two
    found = repeated_encounters(pd.concat([keys, keys[:20]]))
    assert found is not None and found.observed == pytest.approx(20 / 1020)
