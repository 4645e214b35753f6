"""Monitoring: the policy file, outcomes joined late, per-window metrics and their alerts.

The streams are simulated from a calibrated model's risk distribution, so "clean" has a precise
meaning (outcomes drawn with exactly the predicted probability) and each kind of drift is one
controlled change to it."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.alerts import alerts_for
from hospital_mlops.monitoring.outcomes import (
    OutcomesIngested,
    OutcomesRejected,
    ingest_outcomes,
    read_outcomes,
)
from hospital_mlops.monitoring.policy import MonitoringPolicyError, load_monitoring_policy
from hospital_mlops.monitoring.windows import Baseline, compute_windows, estimated_auroc

POLICY = load_monitoring_policy()
WEEK = pd.Timedelta(hours=POLICY.windows.length_hours)
START = pd.Timestamp("2026-01-01", tz="UTC")  # a Thursday, as 1970-01-01: a window start


def _risks(rng: np.random.Generator, n: int) -> np.ndarray:
    # skewed like a readmission model's calibrated risks: most low, a tail of high ones
    return np.clip(rng.beta(1.6, 11.0, size=n), 0.005, 0.95)


THRESHOLD = float(np.quantile(_risks(np.random.default_rng(99), 200_000), 0.9))


def _baseline() -> Baseline:
    rng = np.random.default_rng(1)
    risk = _risks(rng, 200_000)
    y = rng.random(len(risk)) < risk
    from hospital_mlops.model.evaluate import weighted

    auroc = float(weighted.auroc(weighted.Scored.of(y, risk), np.ones((1, len(y))))[0])
    return Baseline(
        model="readmission-30d/1",
        auroc=auroc,
        ece=0.01,
        observed_to_expected=1.0,
        alerts_per_100=100 * float((risk >= THRESHOLD).mean()),
        event_rate=float(y.mean()),
        scores=risk[:20_000],
    )


BASELINE = _baseline()


def _stream(
    weeks: int,
    per_week: int,
    seed: int,
    *,
    outcome_scale: float = 1.0,
    risk_shift: float = 0.0,
    random_outcomes: bool = False,
    threshold: float = THRESHOLD,
    with_outcomes: bool = True,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for week in range(weeks):
        risk = np.clip(_risks(rng, per_week) + risk_shift, 0.001, 0.999)
        truth = np.full(per_week, BASELINE.event_rate) if random_outcomes else risk
        outcome = (rng.random(per_week) < np.clip(truth * outcome_scale, 0, 1)).astype(float)
        frames.append(
            pd.DataFrame(
                {
                    "scored_at": START
                    + week * WEEK
                    + pd.to_timedelta(rng.uniform(0, WEEK.total_seconds(), per_week), unit="s"),
                    "risk": risk,
                    "alert": risk >= threshold,
                    "outcome": outcome if with_outcomes else np.nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _kinds(alerts) -> set[tuple[str, str, str]]:
    return {(a.kind, a.owner, a.severity) for a in alerts}


# --- the estimate before outcomes ---------------------------------------------------------------


def test_estimated_auroc_is_the_pairwise_expectation_ties_included() -> None:
    p = np.array([0.1, 0.1, 0.3, 0.5, 0.5, 0.5, 0.9])
    favourable = pairs = 0.0
    for i, j in itertools.permutations(range(len(p)), 2):
        weight = p[i] * (1 - p[j])
        pairs += weight
        favourable += weight * (1.0 if p[i] > p[j] else 0.5 if p[i] == p[j] else 0.0)
    assert estimated_auroc(p) == pytest.approx(favourable / pairs, abs=1e-12)


def test_estimated_auroc_matches_the_realized_auroc_of_calibrated_outcomes() -> None:
    from hospital_mlops.model.evaluate import weighted

    rng = np.random.default_rng(5)
    risk = _risks(rng, 20_000)
    realized = [
        weighted.auroc(
            weighted.Scored.of(rng.random(len(risk)) < risk, risk), np.ones((1, 20_000))
        )[0]
        for _ in range(20)
    ]
    assert estimated_auroc(risk) == pytest.approx(float(np.mean(realized)), abs=0.005)


# --- windows and alerts ---------------------------------------------------------------------------


def test_a_clean_stream_raises_no_alert_over_many_windows() -> None:
    for seed in range(3):  # 3 × 8 clean weeks: a false alarm in any would fail
        windows = compute_windows(_stream(8, 3000, seed), BASELINE, POLICY)
        assert len(windows) == 8 and all(w.assessable for w in windows)
        assert alerts_for(windows, BASELINE, POLICY) == []
        for w in windows:
            assert w.auroc_ci[0] <= w.auroc <= w.auroc_ci[1]
            assert abs(w.estimated_auroc - BASELINE.auroc) < 0.03
            assert w.n_outcomes == w.n == 3000


def test_windows_are_epoch_aligned_and_carry_the_contract_fields() -> None:
    windows = compute_windows(_stream(2, 500, 0), BASELINE, POLICY)
    assert [(w.start, w.end) for w in windows] == [
        ("2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z"),
        ("2026-01-08T00:00:00Z", "2026-01-15T00:00:00Z"),
    ]
    # a prediction's window does not depend on what else is in the log
    later = compute_windows(_stream(2, 500, 0).iloc[600:], BASELINE, POLICY)
    assert [w.start for w in later] == ["2026-01-08T00:00:00Z"]
    row = windows[0].as_dict()
    for key in ("start", "end", "n", "data_drift", "score_drift", "auroc", "ece"):
        assert key in row
    for key in ("estimated_auroc", "alerts_per_100", "override_rate"):
        assert key in row
    assert row["override_rate"] is None  # no feedback recorded: not invented


def test_calibration_decay_is_for_ml_once_outcomes_arrive_and_not_before() -> None:
    stream = _stream(3, 3000, 7, outcome_scale=1.6)
    alerts = alerts_for(compute_windows(stream, BASELINE, POLICY), BASELINE, POLICY)
    assert ("calibration", "ml", "critical") in _kinds(alerts)
    assert {a.kind for a in alerts} == {"calibration"}  # risks themselves did not move
    unlabelled = stream.assign(outcome=np.nan)
    windows = compute_windows(unlabelled, BASELINE, POLICY)
    assert alerts_for(windows, BASELINE, POLICY) == []
    assert all(w.auroc is None and w.ece is None for w in windows)


def test_small_windows_of_a_calibrated_model_raise_calibration_alerts_at_the_declared_rate() -> (
    None
):
    # 300 outcomes a week: a calibrated model's ECE often exceeds ece_max by chance alone
    windows = compute_windows(_stream(60, 300, 11), BASELINE, POLICY)
    over_limit = [w for w in windows if w.ece > POLICY.thresholds.ece_max]
    assert len(over_limit) > 10  # the fixed limit alone would page most weeks
    calibration = [a for a in alerts_for(windows, BASELINE, POLICY) if a.kind == "calibration"]
    rate = POLICY.thresholds.calibration_false_alarm_rate
    assert len(calibration) <= max(2, 3 * rate * 2 * len(windows))  # two statistics
    for w in windows:
        low, high = w.observed_to_expected_ci
        assert low <= w.observed_to_expected <= high
        assert w.ece_by_chance > POLICY.thresholds.ece_max / 2


def test_chance_bound_shrinks_with_the_window_and_a_real_decay_still_alerts_small() -> None:
    small = compute_windows(_stream(1, 300, 4), BASELINE, POLICY)[0]
    large = compute_windows(_stream(1, 5000, 4), BASELINE, POLICY)[0]
    assert large.ece_by_chance < small.ece_by_chance / 2
    doubled = compute_windows(_stream(2, 300, 4, outcome_scale=2.0), BASELINE, POLICY)
    alerts = [a for a in alerts_for(doubled, BASELINE, POLICY) if a.kind == "calibration"]
    assert {a.window_start for a in alerts} == {w.start for w in doubled}
    assert all(a.severity == "critical" for a in alerts)
    assert any("by chance at this size" in a.message for a in alerts)
    assert any("observed/expected" in a.message and "CI" in a.message for a in alerts)


def test_lost_discrimination_is_a_critical_performance_alert() -> None:
    stream = _stream(2, 3000, 3, random_outcomes=True)
    alerts = alerts_for(compute_windows(stream, BASELINE, POLICY), BASELINE, POLICY)
    assert ("performance", "ml", "critical") in _kinds(alerts)
    assert "AUROC" in next(a.message for a in alerts if a.kind == "performance")


def _tiered(at: pd.Timestamp, *alerts: dict[str, object]) -> dict[str, object]:
    """One detector result as the tiered detector stores it."""
    inputs = [a["subject"] for a in alerts if a["tier"] == "investigate" and a["subject"] != "risk"]
    return {
        "tested_at": at,
        "is_drift": bool(alerts),
        "drifted_features": inputs,
        "decided_by": "tiers",
        "alerts": list(alerts),
    }


def _alert(tier: str, statistic: str, subject: str, magnitude: float) -> dict[str, object]:
    return {
        "tier": tier, "statistic": statistic, "subject": subject, "magnitude": magnitude,
        "threshold": 0.1, "baseline_range": [0.02, 0.08], "detail": f"{subject}: {statistic}",
    }  # fmt: skip


def test_shifted_risks_are_score_drift_only_when_the_detector_says_so() -> None:
    stream = _stream(2, 3000, 4, risk_shift=0.12, with_outcomes=False)
    windows = compute_windows(stream, BASELINE, POLICY)
    # the KS p-value is reported as a secondary statistic; on its own it raises nothing
    assert all(w.score_drift_p_value < POLICY.thresholds.score_drift_p_value for w in windows)
    assert not any(w.score_drift for w in windows)
    kinds = _kinds(alerts_for(windows, BASELINE, POLICY))
    assert not any(k == "score_drift" for k, _, _ in kinds)
    assert ("alert_burden", "clinical-operations", "warning") in kinds

    drift = pd.DataFrame(
        [_tiered(START + pd.Timedelta(days=1), _alert("investigate", "score_shift", "risk", 0.2))]
    )
    windows = compute_windows(stream, BASELINE, POLICY, drift)
    assert [w.score_drift for w in windows] == [True, False]
    alerts = alerts_for(windows, BASELINE, POLICY)
    score = [a for a in alerts if a.kind == "score_drift"]
    assert len(score) == 1 and score[0].owner == "data-engineering"
    assert score[0].tier == "investigate" and score[0].as_dict()["tier"] == "investigate"


def test_tiered_results_become_a_data_fault_to_act_on_and_drift_to_investigate() -> None:
    stream = _stream(3, 3000, 6)
    drift = pd.DataFrame(
        [
            _tiered(
                START + pd.Timedelta(days=1),
                _alert("investigate", "numeric_shift", "number_diagnoses", 0.31),
            ),
            _tiered(
                START + WEEK + pd.Timedelta(days=1),
                {
                    **_alert("act", "requests_refused", "admission_source_id", 0.1),
                    "detail": "requests refused: 10% (admission_source_id 100)",
                },
            ),
            _tiered(START + 2 * WEEK + pd.Timedelta(days=1)),
        ]
    )
    windows = compute_windows(stream, BASELINE, POLICY, drift)
    assert [w.data_drift for w in windows] == [True, False, False]
    assert windows[0].moved_inputs[0]["subject"] == "number_diagnoses"
    alerts = alerts_for(windows, BASELINE, POLICY)
    by_kind = {a.kind: a for a in alerts}
    assert set(by_kind) == {"data_drift", "data_fault"}
    look, act = by_kind["data_drift"], by_kind["data_fault"]
    assert look.tier == "investigate" and act.tier == "act" and act.severity == "critical"
    # the owner reads the magnitude, its threshold, the baseline's range and whether the
    # scores and calibration moved with it
    assert "number_diagnoses numeric shift 0.31 (threshold 0.1; baseline windows 0.02–0.08)" in (
        look.message
    )
    assert "scores did not move" in look.message and "observed/expected" in look.message
    assert "requests refused" in act.message and act.window_start == windows[1].start


def test_another_versions_detector_lends_only_its_feed_faults() -> None:
    from hospital_mlops.monitoring.run import feed_faults

    at = START + pd.Timedelta(hours=1)
    results = pd.DataFrame(
        {
            "tested_at": [at, at + pd.Timedelta(hours=1)],
            "is_drift": [True, True],
            "drifted_features": [["race"], ["number_diagnoses"]],
            "decided_by": ["tiers", "tiers"],
            "alerts": [
                [{"tier": "investigate", "subject": "race", "detail": "race moved"}],
                [
                    {"tier": "investigate", "subject": "number_diagnoses", "detail": "moved"},
                    {"tier": "act", "subject": "number_diagnoses", "detail": "median 1"},
                ],
            ],
        }
    )
    lent = feed_faults(results)
    assert len(lent) == 1 and lent["alerts"].iloc[0] == [results["alerts"].iloc[1][1]]
    assert lent["drifted_features"].iloc[0] == []
    assert feed_faults(results.iloc[:0]).empty


def test_a_feed_gone_quiet_is_a_data_fault_and_a_short_history_is_not_judged() -> None:
    stream = _stream(6, 3000, 9)
    week = stream["scored_at"].min().floor("D")
    quiet = stream[
        (stream["scored_at"] < week + 3 * WEEK) | (stream["scored_at"] >= week + 5 * WEEK)
    ]
    quiet = pd.concat([quiet, stream[(stream["scored_at"] >= week + 3 * WEEK)].head(100)])
    windows = compute_windows(quiet, BASELINE, POLICY)
    faults = [a for a in alerts_for(windows, BASELINE, POLICY) if a.kind == "data_fault"]
    assert len(faults) == 1 and "silent feed" in faults[0].message
    assert faults[0].tier == "act"
    # a policy that calls a feed silent only after three quiet windows lets two pass
    patient = POLICY.model_copy(
        update={"windows": POLICY.windows.model_copy(update={"silent_after": 3})}
    )
    assert not [a for a in alerts_for(windows, BASELINE, patient) if a.kind == "data_fault"]
    # a feed that stopped: silence up to now counts once the monitoring run says when now is
    end = stream["scored_at"].max() + 4 * WEEK
    later = alerts_for(compute_windows(stream, BASELINE, POLICY), BASELINE, POLICY, end)
    assert [a.kind for a in later] == ["data_fault"]
    assert alerts_for(windows[:2], BASELINE, POLICY, end) == []  # two windows: nothing typical


def test_the_detectors_results_become_data_drift_alerts_in_their_window() -> None:
    stream = _stream(2, 3000, 8)
    drift = pd.DataFrame(
        {
            "tested_at": [START + pd.Timedelta(days=2), START + WEEK + pd.Timedelta(days=1)],
            "is_drift": [False, True],
            "drifted_features": [[], ["max_glucose_result", "hba1c_result"]],
        }
    )
    windows = compute_windows(stream, BASELINE, POLICY, drift)
    assert [w.data_drift for w in windows] == [False, True]
    (alert,) = alerts_for(windows, BASELINE, POLICY)
    assert (alert.kind, alert.owner) == ("data_drift", "data-engineering")
    assert "hba1c_result" in alert.message and alert.window_start == windows[1].start


def test_a_window_too_small_to_judge_is_reported_but_raises_nothing() -> None:
    stream = _stream(1, POLICY.windows.min_predictions - 1, 2, random_outcomes=True)
    (window,) = compute_windows(stream, BASELINE, POLICY)
    assert not window.assessable and window.n == POLICY.windows.min_predictions - 1
    assert alerts_for([window], BASELINE, POLICY) == []


# --- the policy file ------------------------------------------------------------------------------


def test_the_bundled_policy_gives_every_kind_of_alert_an_owner() -> None:
    assert POLICY.owners["calibration"] == "ml"
    assert POLICY.owners["data_drift"] == "data-engineering"
    assert POLICY.owners["workflow"] == "clinical-operations"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("  workflow: clinical-operations\n", ""), "missing: workflow"),
        (("observed_to_expected: [0.8, 1.25]", "observed_to_expected: [1.2, 0.8]"), "0 < low"),
        (("  min_outcomes: 100", "  min_outcomes: 3"), "windows.min_outcomes"),
        (("  seed: 0\n", "  seed: 0\n  sead: 1\n"), "bootstrap.sead"),
        # a use case's differences: its id declared, its merged policy valid, its horizon long
        # enough for its label
        (
            ("  post_acute_at_admission:\n", "  post_acute_at_discharge:\n"),
            r"use_cases\.post_acute_at_discharge: no such use case",
        ),
        (
            ("      outcome_horizon_days: 14", "      outcome_horizon_days: 0"),
            r"use_cases\.post_acute_at_admission.*windows\.outcome_horizon_days",
        ),
        (
            ("      outcome_horizon_days: 14", "      outcome_horizon_days: 7"),
            r"use_cases\.post_acute_at_admission\.windows\.outcome_horizon_days: 7 is shorter than "
            r"use case post_acute_at_admission's label window \(14 days\)",
        ),
        (
            ("  outcome_horizon_days: 30 ", "  outcome_horizon_days: 20 "),
            r"windows\.outcome_horizon_days: 20 is shorter than use case readmission_30d",
        ),
    ],
)
def test_a_malformed_policy_fails_naming_the_path(tmp_path, edit, message) -> None:
    text = Path("config/monitoring.yaml").read_text()
    assert edit[0] in text
    bad = tmp_path / "monitoring.yaml"
    bad.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(MonitoringPolicyError, match=message):
        load_monitoring_policy(bad)


def test_each_use_case_is_monitored_under_its_own_policy() -> None:
    """The admission model's outcome is known at discharge, not 30 days after it: its own
    horizon, everything else the policy's."""
    own = POLICY.for_use_case("post_acute_at_admission")
    assert (POLICY.windows.outcome_horizon_days, own.windows.outcome_horizon_days) == (30, 14)
    assert own.model_dump(exclude={"windows", "use_cases"}) == POLICY.model_dump(
        exclude={"windows", "use_cases"}
    )
    assert own.windows.length_hours == POLICY.windows.length_hours
    assert POLICY.for_use_case("readmission_30d") is POLICY  # the first has no differences


# --- outcomes -------------------------------------------------------------------------------------

SERVED = ServedModel("readmission-30d", 1, "a" * 64, "fs", "b" * 64, "diabetes130")


def _token(i: int) -> str:
    return f"tok{i:020d}"


@pytest.fixture
def logged(store_url: str) -> PredictionLog:
    log = PredictionLog(store_url)
    instances = [{"encounter_token": _token(i)} for i in range(6)]
    answers = [
        {"prediction_id": f"p{i}", "scored_at": "2026-01-06T00:00:00Z", "risk": 0.1, "alert": False}
        for i in range(6)
    ]
    instances.append({"encounter_token": _token(0)})  # the same encounter scored twice
    answers.append({**answers[0], "prediction_id": "p0-again"})
    log.write(records("r", "v1", SERVED, instances, answers))
    return log


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "outcomes.csv"
    path.write_text(text)
    return path


def test_outcomes_join_every_prediction_of_their_encounter(logged, tmp_path) -> None:
    path = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(0)},1\n{_token(1)},0\n")
    frame, digest = read_outcomes(path)
    done = ingest_outcomes(logged, frame, digest)
    assert (done.rows, done.new, done.already_known, done.predictions_joined) == (2, 2, 0, 3)
    again = ingest_outcomes(logged, frame, digest)  # a re-sent file changes nothing
    assert (again.new, again.already_known) == (0, 2)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "encounter_token,readmitted_30d\n{t0},1\nunknowntoken0000000000,0\n",
            "no logged prediction",
        ),
        ("encounter_token,readmitted_30d\n{t0},1\n{t0},0\n", "more than once"),
        ("encounter_token,readmitted_30d\n{t0},yes\n", "not 0 or 1"),
        ("encounter_token,readmitted_30d\n1234567,1\n", "raw identifiers are refused"),
        ("encounter_token\n{t0}\n", "missing column"),
        ("encounter_token,readmitted_30d,mrn\n{t0},1,55\n", "unexpected column"),
        ("encounter_token,readmitted_30d,recorded_at\n{t0},1,last week\n", "ISO 8601"),
    ],
)
def test_bad_outcomes_are_refused_whole(logged, tmp_path, text, message) -> None:
    path = _csv(tmp_path, text.format(t0=_token(0)))
    frame, digest = read_outcomes(path)
    with pytest.raises(OutcomesRejected, match=message):
        ingest_outcomes(logged, frame, digest)
    # nothing half-written: the valid first row was not ingested either
    good = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(0)},0\n")
    assert ingest_outcomes(logged, *read_outcomes(good)).new == 1


def test_an_outcome_that_contradicts_an_earlier_one_is_refused(logged, tmp_path) -> None:
    first = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(2)},1\n")
    ingest_outcomes(logged, *read_outcomes(first))
    flipped = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(3)},1\n{_token(2)},0\n")
    with pytest.raises(OutcomesRejected, match="contradict"):
        ingest_outcomes(logged, *read_outcomes(flipped))
    third = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(3)},0\n")
    assert ingest_outcomes(logged, *read_outcomes(third)).new == 1  # token 3 was not written


def test_simultaneous_ingests_of_one_file_write_each_outcome_once(logged, tmp_path) -> None:
    """The same outcomes file ingested by two jobs at once (a retried CronJob): each outcome
    is written once, and neither job fails."""
    from tests.stores import simultaneously

    path = _csv(tmp_path, f"encounter_token,readmitted_30d\n{_token(4)},1\n{_token(5)},0\n")
    frame, digest = read_outcomes(path)
    done = simultaneously(4, lambda: ingest_outcomes(logged, frame, digest))
    assert len(done) == 4 and all(isinstance(d, OutcomesIngested) for d in done), done
    assert sum(d.new for d in done) == 2  # type: ignore[union-attr]
    assert {d.rows for d in done} == {2}  # type: ignore[union-attr]
