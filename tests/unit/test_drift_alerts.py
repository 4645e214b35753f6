"""Tiered alerts (drift/alerts.py): a drifted input is an investigate alert with its
magnitude and baseline range; a broken feed is an act alert; every statistic has one tier; the
baseline kept as evidence reads back to the same judgement."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.drift.alerts import (
    DEFAULT_TIERS,
    DriftBaseline,
    assess_window,
    build_baseline,
    check_tiers,
)
from hospital_mlops.drift.thresholds import ThresholdError
from tests.unit.test_drift_thresholds import KINDS, RATE, WINDOW, _week


@pytest.fixture(scope="module")
def baseline_frame() -> pd.DataFrame:
    rng = np.random.default_rng(11)
    return pd.concat([_week(rng) for _ in range(20)], ignore_index=True)


@pytest.fixture(scope="module")
def baseline(baseline_frame: pd.DataFrame) -> DriftBaseline:
    return build_baseline(
        baseline_frame, KINDS, window=WINDOW, false_alarm_rate=RATE, hours=20 * 168.0
    )


def test_a_drifted_input_is_investigated_and_a_broken_feed_is_acted_on(
    baseline: DriftBaseline, baseline_frame: pd.DataFrame
) -> None:
    rng = np.random.default_rng(12)
    drifted = _week(rng)
    drifted["labs"] = drifted["labs"] + 25  # an assay recalibration: same units, shifted
    alerts = assess_window(baseline, baseline_frame, drifted, hours=168.0)
    assert [(a.tier, a.statistic, a.subject) for a in alerts][:1] == [
        ("investigate", "numeric_shift", "labs")
    ]
    (labs,) = [a for a in alerts if a.subject == "labs"]
    assert labs.magnitude > labs.threshold > labs.baseline_range[1]  # type: ignore[index]
    refused = assess_window(
        baseline, baseline_frame, _week(rng, n=900), refused={"admission_source_id": 100},
        hours=168.0,
    )  # fmt: skip
    assert refused[0].tier == "act" and refused[0].statistic == "requests_refused"
    assert "admission_source_id (100)" in refused[0].detail


def test_a_silent_feed_is_acted_on_and_a_short_window_is_judged_only_by_the_rules(
    baseline: DriftBaseline, baseline_frame: pd.DataFrame
) -> None:
    rng = np.random.default_rng(13)
    few = _week(rng, n=30)
    few["labs"] = few["labs"] + 25  # would be a shift, but 30 rows cannot show one
    alerts = assess_window(baseline, baseline_frame, few, hours=168.0)
    assert [(a.tier, a.statistic) for a in alerts] == [("act", "silent_feed")]
    # a window whose events all carry one timestamp (a burst) is judged, never silent, and
    # never an error (the detector once raised on it)
    burst = assess_window(baseline, baseline_frame, _week(rng, n=30), hours=0.0)
    assert "silent_feed" not in [a.statistic for a in burst]


def test_every_statistic_has_exactly_one_tier() -> None:
    assert check_tiers(DEFAULT_TIERS) == DEFAULT_TIERS
    with pytest.raises(ThresholdError, match="no tier for"):
        check_tiers({k: v for k, v in DEFAULT_TIERS.items() if k != "silent_feed"})
    with pytest.raises(ThresholdError, match="unknown statistics"):
        check_tiers({**DEFAULT_TIERS, "p_value": "act"})
    with pytest.raises(ThresholdError, match="investigate or act"):
        check_tiers({**DEFAULT_TIERS, "silent_feed": "page"})


def test_the_baseline_kept_as_evidence_reads_back_to_the_same_judgement(
    baseline: DriftBaseline, baseline_frame: pd.DataFrame
) -> None:
    again = DriftBaseline.from_json(json.loads(json.dumps(baseline.to_json())))
    rng = np.random.default_rng(14)
    week = _week(rng, missing_stay=1.0)
    assert assess_window(again, baseline_frame, week) == assess_window(
        baseline, baseline_frame, week
    )
    with pytest.raises(ThresholdError, match="drift baseline: not readable"):
        DriftBaseline.from_json({"thresholds": {}})
