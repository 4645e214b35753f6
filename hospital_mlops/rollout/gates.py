"""Rollout decisions: the current stage's gates on what was observed since it began, the
rollback criteria, and what happens next (advance, hold, roll back). Pure: the commands gather
the observations and act on the decision."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hospital_mlops.rollout.policy import STAGES, RolloutPolicy, Stage, StagePolicy

# Data alerts that hold a stage: only the act tier's ("critical"). An investigate-tier drift
# alert tells its owner to look; on its own it holds nothing (docs/monitoring.md).
DRIFT_KINDS = ("data_fault", "data_drift", "score_drift")


@dataclass(frozen=True)
class Observations:
    """The candidate since the current stage (or canary step) began. ``None``: not measured
    (a gate that needs it fails: nothing advances on a number nobody has)."""

    hours: float
    predictions: int
    latency_p99_ms: float | None = None
    error_rate: float | None = None
    agreement_with_champion: float | None = None
    ece: float | None = None
    alerts_per_100_change: float | None = None  # relative to the validated rate, e.g. +0.1
    override_rate: float | None = None
    alerts: tuple[tuple[str, str], ...] = ()  # monitoring alerts in the stage: (kind, severity)


@dataclass(frozen=True)
class StageGateResult:
    name: str
    passed: bool
    observed: Any
    limit: Any

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RolloutState:
    stage: Stage
    canary_step: int = 0  # index into the canary steps while in canary

    def label(self, policy: RolloutPolicy) -> str:
        if self.stage == "canary":
            return f"canary {policy.stages.canary.steps[self.canary_step]}%"
        return self.stage

    def traffic_percent(self, policy: RolloutPolicy) -> int:
        """The candidate's share of the answers clinicians see."""
        if self.stage == "canary":
            return policy.stages.canary.steps[self.canary_step]
        return 100 if self.stage == "full" else 0


@dataclass(frozen=True)
class Decision:
    stage_before: str
    stage_after: str
    decision: Literal["advance", "hold", "rollback"]
    gates: list[StageGateResult]
    rollback_criteria: list[StageGateResult]
    traffic_percent_after: int
    next_state: RolloutState | None = field(default=None)  # None after a rollback

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("next_state")
        return out


def _at_most(name: str, observed: float | None, limit: float | None) -> StageGateResult | None:
    if limit is None:
        return None
    return StageGateResult(name, observed is not None and observed <= limit, observed, limit)


def stage_gates(policy: StagePolicy, obs: Observations) -> list[StageGateResult]:
    g = policy.gates
    drift = sorted(
        {kind for kind, severity in obs.alerts if kind in DRIFT_KINDS and severity == "critical"}
    )
    results = [
        StageGateResult("min_hours", obs.hours >= policy.min_hours, obs.hours, policy.min_hours),
        StageGateResult(
            "min_predictions",
            obs.predictions >= policy.min_predictions,
            obs.predictions,
            policy.min_predictions,
        ),
        _at_most("latency_p99_ms", obs.latency_p99_ms, g.latency_p99_ms_max),
        _at_most("error_rate", obs.error_rate, g.error_rate_max),
        _at_most("ece", obs.ece, g.ece_max),
        _at_most(
            "alerts_per_100_change",
            None if obs.alerts_per_100_change is None else abs(obs.alerts_per_100_change),
            g.alerts_per_100_change_max,
        ),
        _at_most("override_rate", obs.override_rate, g.override_rate_max),
    ]
    if g.no_drift_alerts:
        results.append(StageGateResult("no_drift_alerts", not drift, drift, []))
    if g.agreement_with_champion_min is not None:
        agreement = obs.agreement_with_champion
        results.append(
            StageGateResult(
                "agreement_with_champion",
                agreement is not None and agreement >= g.agreement_with_champion_min,
                agreement,
                g.agreement_with_champion_min,
            )
        )
    return [r for r in results if r is not None]


def rollback_criteria(policy: RolloutPolicy, obs: Observations) -> list[StageGateResult]:
    """Each criterion as a result; ``passed`` False means it tripped."""
    r = policy.rollback
    tripped_alerts = sorted(
        {kind for kind, severity in obs.alerts if kind in r.on_alerts and severity == "critical"}
    )
    return [
        StageGateResult(
            "error_rate",
            obs.error_rate is None or obs.error_rate <= r.error_rate_max,
            obs.error_rate,
            r.error_rate_max,
        ),
        StageGateResult(
            "latency_p99_ms",
            obs.latency_p99_ms is None or obs.latency_p99_ms <= r.latency_p99_ms_max,
            obs.latency_p99_ms,
            r.latency_p99_ms_max,
        ),
        StageGateResult("critical_alerts", not tripped_alerts, tripped_alerts, list(r.on_alerts)),
    ]


def _after(policy: RolloutPolicy, state: RolloutState) -> RolloutState:
    if state.stage == "canary" and state.canary_step + 1 < len(policy.stages.canary.steps):
        return RolloutState("canary", state.canary_step + 1)
    return RolloutState(STAGES[STAGES.index(state.stage) + 1])


def decide(
    policy: RolloutPolicy, state: RolloutState, obs: Observations, signoffs_complete: bool
) -> Decision:
    """Roll back if a criterion trips; else advance if every gate of the stage passes (and,
    into a stage whose answers reach clinicians, every registry sign-off exists); else hold."""
    before = state.label(policy)
    if state.stage == "full":
        return Decision(before, before, "hold", [], [], 100, state)
    criteria = rollback_criteria(policy, obs)
    gates = stage_gates(policy.stage(state.stage), obs)
    if not all(c.passed for c in criteria):
        return Decision(before, "rolled back", "rollback", gates, criteria, 0, None)
    after = _after(policy, state)
    if STAGES.index(after.stage) >= STAGES.index(policy.signoffs_required_from):
        gates = [
            *gates,
            StageGateResult("registry_signoffs", signoffs_complete, signoffs_complete, True),
        ]
    if all(g.passed for g in gates):
        return Decision(
            before,
            after.label(policy),
            "advance",
            gates,
            criteria,
            after.traffic_percent(policy),
            after,
        )
    return Decision(before, before, "hold", gates, criteria, state.traffic_percent(policy), state)
