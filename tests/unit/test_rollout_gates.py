"""Rollout decisions: every stage's gates, the canary steps, sign-offs before full, rollback."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hospital_mlops.rollout.gates import Observations, RolloutState, decide
from hospital_mlops.rollout.policy import RolloutPolicyError, load_rollout_policy

POLICY = load_rollout_policy()
HEALTHY = Observations(
    hours=400,
    predictions=5000,
    latency_p99_ms=12.0,
    error_rate=0.0,
    agreement_with_champion=0.93,
    ece=0.012,
    alerts_per_100_change=0.05,
    override_rate=0.2,
)


def _walk(obs: Observations) -> list[str]:
    state, path = RolloutState("shadow"), ["shadow"]
    while state.stage != "full":
        decision = decide(POLICY, state, obs, signoffs_complete=True)
        assert decision.decision == "advance", decision.as_dict()
        state = decision.next_state
        path.append(decision.stage_after)
    return path


def test_a_healthy_candidate_walks_every_stage_and_canary_step() -> None:
    assert _walk(HEALTHY) == ["shadow", "silent", "canary 10%", "canary 50%", "full"]


def test_traffic_follows_the_stage() -> None:
    canary = decide(POLICY, RolloutState("silent"), HEALTHY, True)
    assert (canary.stage_after, canary.traffic_percent_after) == ("canary 10%", 10)
    full = decide(POLICY, RolloutState("canary", 1), HEALTHY, True)
    assert (full.stage_after, full.traffic_percent_after) == ("full", 100)
    shadow = decide(POLICY, RolloutState("shadow"), HEALTHY, True)
    assert shadow.traffic_percent_after == 0  # silent: scored and logged, shown to no one


@pytest.mark.parametrize(
    ("stage", "change", "gate"),
    [
        ("shadow", {"hours": 10}, "min_hours"),
        ("shadow", {"predictions": 20}, "min_predictions"),
        ("shadow", {"agreement_with_champion": 0.7}, "agreement_with_champion"),
        ("shadow", {"agreement_with_champion": None}, "agreement_with_champion"),
        ("shadow", {"alerts": (("score_drift", "critical"),)}, "no_drift_alerts"),
        ("silent", {"ece": None}, "ece"),  # no outcomes yet: a silent stage waits for them
        ("silent", {"ece": 0.09}, "ece"),
        ("silent", {"alerts_per_100_change": -0.4}, "alerts_per_100_change"),
        ("silent", {"latency_p99_ms": 80.0}, "latency_p99_ms"),
        ("canary", {"override_rate": 0.7}, "override_rate"),
        ("canary", {"error_rate": 0.005}, "error_rate"),
    ],
)
def test_each_failing_gate_holds_the_stage_and_is_named(stage, change, gate) -> None:
    decision = decide(POLICY, RolloutState(stage), replace(HEALTHY, **change), True)
    assert decision.decision == "hold" and decision.stage_after == decision.stage_before
    failed = [g.name for g in decision.gates if not g.passed]
    assert failed == [gate]


def test_an_investigate_tier_drift_alert_holds_nothing() -> None:
    """Only the act tier may hold a rollout: drift to investigate tells its owner to look."""
    looks = (("data_drift", "warning"), ("score_drift", "warning"))
    decision = decide(POLICY, RolloutState("shadow"), replace(HEALTHY, alerts=looks), True)
    assert decision.decision == "advance"
    # a data fault is the act tier: it rolls the candidate back
    fault = replace(HEALTHY, alerts=(("data_fault", "critical"),))
    assert decide(POLICY, RolloutState("canary", 0), fault, True).decision == "rollback"


def test_stages_that_reach_clinicians_need_the_registry_signoffs() -> None:
    for state in (RolloutState("silent"), RolloutState("canary", 0), RolloutState("canary", 1)):
        held = decide(POLICY, state, HEALTHY, signoffs_complete=False)
        assert held.decision == "hold"
        assert [g.name for g in held.gates if not g.passed] == ["registry_signoffs"]
    # shadow → silent exposes no one: no sign-offs asked yet
    assert decide(POLICY, RolloutState("shadow"), HEALTHY, False).decision == "advance"
    # a policy may ask for them only before full
    late = POLICY.model_copy(update={"signoffs_required_from": "full"})
    assert decide(late, RolloutState("canary", 0), HEALTHY, False).decision == "advance"
    assert decide(late, RolloutState("canary", 1), HEALTHY, False).decision == "hold"


@pytest.mark.parametrize(
    ("change", "criterion"),
    [
        ({"error_rate": 0.05}, "error_rate"),
        ({"latency_p99_ms": 900.0}, "latency_p99_ms"),
        ({"alerts": (("calibration", "critical"),)}, "critical_alerts"),
        ({"alerts": (("performance", "critical"), ("data_drift", "warning"))}, "critical_alerts"),
    ],
)
def test_a_rollback_criterion_rolls_back_at_once(change, criterion) -> None:
    # even before the stage's minimum duration: a bad canary does not wait out its 72 hours
    obs = replace(HEALTHY, hours=1, predictions=10, **change)
    decision = decide(POLICY, RolloutState("canary", 0), obs, True)
    assert (decision.decision, decision.stage_after) == ("rollback", "rolled back")
    assert decision.traffic_percent_after == 0 and decision.next_state is None
    assert [c.name for c in decision.rollback_criteria if not c.passed] == [criterion]


def test_a_performance_warning_is_not_a_rollback() -> None:
    obs = replace(HEALTHY, alerts=(("performance", "warning"),))
    assert decide(POLICY, RolloutState("canary", 0), obs, True).decision == "advance"


def test_the_decision_json_names_every_gate_with_observed_and_limit() -> None:
    out = decide(POLICY, RolloutState("shadow"), HEALTHY, True).as_dict()
    assert (out["stage_before"], out["stage_after"], out["decision"]) == (
        "shadow",
        "silent",
        "advance",
    )
    assert all(set(g) == {"name", "passed", "observed", "limit"} for g in out["gates"])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("steps: [10, 50]", "steps: [50, 10]"), "steps must be increasing"),
        (
            (
                "      agreement_with_champion_min: 0.85   # same alert decision as the champion\n",
                "",
            ),
            "agreement_with_champion_min",
        ),
        (
            ("  error_rate_max: 0.01\n", "  error_rate_max: 0.01\n  eror_rate: 1\n"),
            "rollback.eror_rate",
        ),
    ],
)
def test_a_malformed_rollout_policy_fails_naming_the_path(tmp_path, edit, message) -> None:
    text = Path("config/rollout.yaml").read_text()
    assert edit[0] in text
    bad = tmp_path / "rollout.yaml"
    bad.write_text(text.replace(edit[0], edit[1]))
    with pytest.raises(RolloutPolicyError, match=message):
        load_rollout_policy(bad)
