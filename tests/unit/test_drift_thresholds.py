"""Drift magnitudes and thresholds from the baseline's own variation (drift/thresholds.py).

The stable stream below has what real weeks have: every window its own small shift in case mix
(category shares drawn around the baseline's, numeric means jittered), so a per-feature test at
n = 1,000 would flag most windows. The thresholds must keep the declared window-level rate on
new stable windows, and still catch real faults in their first window."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hospital_mlops.drift.thresholds import (
    DriftThresholds,
    ThresholdError,
    calibrate,
    consecutive_windows,
    exceedances,
    js_distance,
    kinds_of,
    normalized_wasserstein,
    numeric_scale,
    window_magnitudes,
)

KINDS = kinds_of(
    [("age", "categorical"), ("source", "categorical"), ("labs", "numeric"),
     ("stay", "numeric"), ("insulin", "binary")]
)  # fmt: skip
AGES = ["[40-50)", "[50-60)", "[60-70)", "[70-80)", "[80-90)"]
SOURCES = ["emergency", "referral", "transfer", "other"]
WINDOW = 1000
RATE = 0.02


def _week(rng: np.random.Generator, n: int = WINDOW, **fault: float) -> pd.DataFrame:
    """One ordinary week: shares and means vary from week to week, as sites and case mix do."""
    ages = rng.dirichlet(np.array([10, 18, 25, 25, 12]) * 2)
    sources = rng.dirichlet(np.array([55, 25, 15, 5]) * 2)
    labs_mean = 43 + rng.normal(0, 1.2)
    frame = pd.DataFrame(
        {
            "age": rng.choice(AGES, n, p=ages),
            "source": rng.choice(SOURCES, n, p=sources),
            "labs": np.clip(rng.normal(labs_mean, 19, n), 1, None).round(),
            "stay": rng.poisson(4.4 + rng.normal(0, 0.1), n).astype(float),
            "insulin": rng.choice(["No", "Steady", "Up", "Down"], n, p=[0.47, 0.3, 0.12, 0.11]),
        }
    )
    frame.loc[rng.random(n) < 0.02, "labs"] = np.nan
    frame["risk"] = np.clip(rng.beta(1.6, 11.0, n) + 0.002 * (frame["stay"] - 4.4), 0.001, 0.99)
    if fault.get("labs_scale"):
        frame["labs"] = frame["labs"] * fault["labs_scale"]  # a unit change
    if fault.get("missing_stay"):
        frame["stay"] = np.nan  # an input gone
    if fault.get("recoded"):
        frame["source"] = frame["source"].replace({"emergency": "ED"})  # a recoded category
    if fault.get("risk_shift"):
        frame["risk"] = np.clip(frame["risk"] + fault["risk_shift"], 0.001, 0.99)
    return frame


@pytest.fixture(scope="module")
def baseline() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.concat([_week(rng) for _ in range(40)], ignore_index=True)


@pytest.fixture(scope="module")
def thresholds(baseline: pd.DataFrame) -> DriftThresholds:
    return calibrate(baseline, KINDS, window=WINDOW, false_alarm_rate=RATE)


def test_the_magnitudes_are_the_effect_sizes_they_claim() -> None:
    same = pd.Series(["a", "b", "b", None])
    assert js_distance(same, same.sample(frac=1, random_state=0)) == pytest.approx(0.0)
    assert js_distance(pd.Series(["a"] * 5), pd.Series(["b"] * 5)) == pytest.approx(1.0)
    reference = pd.Series(np.arange(1000, dtype=float))  # IQR 499.5
    assert numeric_scale(reference) == pytest.approx(499.5)
    assert normalized_wasserstein(reference, reference + 499.5, 499.5) == pytest.approx(1.0)
    mostly_zero = pd.Series([0.0] * 90 + [1.0] * 10)  # IQR 0: the standard deviation instead
    assert numeric_scale(mostly_zero) == pytest.approx(0.3)
    window = pd.DataFrame({"x": [1.0, np.nan, 3.0, np.nan], "c": ["a", "a", "b", None]})
    ref = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": ["a", "b", "b", "b"]})
    measured = window_magnitudes(ref, window, {"x": "numeric", "c": "categorical"})
    assert measured["x.missing"] == pytest.approx(0.5) and measured["c.missing"] == 0.25
    assert "risk" not in measured  # the score is watched only when both frames carry it


def test_thresholds_come_from_consecutive_baseline_windows(
    baseline: pd.DataFrame, thresholds: DriftThresholds
) -> None:
    assert thresholds.baseline_windows == 40 and thresholds.window == WINDOW
    names = {t.name for t in thresholds.thresholds}
    assert names == {*KINDS, *(f"{n}.missing" for n in KINDS), "risk"}
    assert thresholds.per_statistic_level == pytest.approx(1 - RATE / len(names))
    for t in thresholds.thresholds:
        assert t.baseline_min <= t.baseline_median <= t.baseline_max <= t.threshold
    # consecutive windows, in order, not resamples
    windows = consecutive_windows(baseline.head(3500), WINDOW)
    assert [len(w) for w in windows] == [WINDOW] * 3
    assert list(windows[1].index) == list(range(1000, 2000))
    again = DriftThresholds.from_json(json.loads(json.dumps(thresholds.to_json())))
    assert again == thresholds


def test_new_stable_weeks_alarm_at_most_at_the_declared_rate(
    baseline: pd.DataFrame, thresholds: DriftThresholds
) -> None:
    """300 new ordinary weeks against the whole baseline as the reference: the measured
    window-level rate's 95% Clopper-Pearson lower bound does not exceed the declared rate."""
    rng = np.random.default_rng(2)
    n = 300
    alarms = sum(bool(exceedances(baseline, _week(rng), KINDS, thresholds)) for _ in range(n))
    lower = stats.beta.ppf(0.025, alarms, n - alarms + 1) if alarms else 0.0
    assert lower <= RATE, f"{alarms} of {n} stable windows alarmed"
    # and the old way, a chi-square test per category at n = 1,000, flags most of them
    flagged = 0
    for _ in range(20):
        week = _week(rng)
        counts = week["source"].value_counts().reindex(SOURCES, fill_value=0)
        expected = baseline["source"].value_counts(normalize=True).reindex(SOURCES) * WINDOW
        flagged += stats.chisquare(counts, expected).pvalue < 0.001 / 11
    assert flagged >= 5  # the noise this replaces (Bonferroni over 11 tests, as drift/tester.py)


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ({"labs_scale": 2.2}, "labs"),  # a unit change
        ({"missing_stay": 1.0}, "stay.missing"),  # an input gone
        ({"recoded": 1.0}, "source"),  # a recoded category
        ({"risk_shift": 0.05}, "risk"),  # the scores moved
    ],
)
def test_real_faults_are_caught_in_their_first_window(
    baseline: pd.DataFrame, thresholds: DriftThresholds, fault: dict[str, float], expected: str
) -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        found = exceedances(baseline, _week(rng, **fault), KINDS, thresholds)
        assert expected in [e.name for e in found], [e.name for e in found]
        top = found[0]
        assert top.magnitude > top.threshold and top.baseline_range[1] <= top.threshold


def test_bad_baselines_and_settings_are_refused_naming_them(baseline: pd.DataFrame) -> None:
    with pytest.raises(ThresholdError, match=r"false_alarm_rate 0\.7: must be in \(0, 0\.5\)"):
        calibrate(baseline, KINDS, window=WINDOW, false_alarm_rate=0.7)
    with pytest.raises(ThresholdError, match="5 whole windows of 1000, and thresholds need"):
        calibrate(baseline.head(5500), KINDS, window=WINDOW, false_alarm_rate=RATE)
    with pytest.raises(ThresholdError, match=r"inputs missing from the frames: \['labs'\]"):
        window_magnitudes(baseline, baseline.drop(columns="labs"), KINDS)
    small = calibrate(baseline, {"labs": "numeric"}, window=WINDOW, false_alarm_rate=RATE)
    with pytest.raises(ThresholdError, match=r"no threshold for \['age', 'age.missing'"):
        exceedances(baseline, baseline.head(WINDOW), KINDS, small)
    with pytest.raises(ThresholdError, match="not readable"):
        DriftThresholds.from_json({"false_alarm_rate": 0.02})
    assert math.isfinite(small.thresholds[0].threshold)


def test_a_never_missing_input_alerts_on_a_material_missing_share_only(
    baseline: pd.DataFrame, thresholds: DriftThresholds
) -> None:
    """``stay`` is never missing in the baseline: its missingness spread is nil, so the floor
    (2 points) is the threshold: 1% of stays blank is no alert, 5% is."""
    (stay,) = [t for t in thresholds.thresholds if t.name == "stay.missing"]
    assert stay.baseline_max == 0.0 and stay.threshold == pytest.approx(0.02)
    rng = np.random.default_rng(4)
    for share, alerted in ((0.01, False), (0.05, True)):
        week = _week(rng)
        week.loc[week.index[: int(share * WINDOW)], "stay"] = np.nan
        found = [e.name for e in exceedances(baseline, week, KINDS, thresholds)]
        assert ("stay.missing" in found) is alerted, (share, found)


def test_the_spread_is_pooled_per_kind_of_statistic(thresholds: DriftThresholds) -> None:
    by_kind: dict[str, set[float]] = {}
    for t in thresholds.thresholds:
        by_kind.setdefault(t.statistic, set()).add(round(t.log_sd, 12))
    assert all(len(spreads) == 1 for spreads in by_kind.values()), by_kind
    assert set(by_kind) == {"categorical_shift", "numeric_shift", "missingness", "score_shift"}
