"""``config/rollout.yaml``: per stage, the minimum duration and volume and the gates; the canary
steps; the rollback criteria."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import config_path

Stage = Literal["shadow", "silent", "canary", "full"]
STAGES: tuple[Stage, ...] = ("shadow", "silent", "canary", "full")


class RolloutPolicyError(ValueError):
    pass


class StageGates(StrictModel):
    latency_p99_ms_max: float = Field(gt=0)
    error_rate_max: float = Field(ge=0, lt=1)
    no_drift_alerts: bool = True
    agreement_with_champion_min: float | None = Field(default=None, ge=0, le=1)
    ece_max: float | None = Field(default=None, gt=0, lt=1)
    alerts_per_100_change_max: float | None = Field(default=None, gt=0)
    override_rate_max: float | None = Field(default=None, gt=0, le=1)


class StagePolicy(StrictModel):
    min_hours: float = Field(ge=0)
    min_predictions: int = Field(ge=0)
    gates: StageGates


class CanaryPolicy(StagePolicy):
    steps: tuple[int, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _increasing(self) -> CanaryPolicy:
        steps = list(self.steps)
        if steps != sorted(set(steps)) or not all(0 < s < 100 for s in steps):
            raise ValueError("steps must be increasing percentages between 0 and 100")
        return self


class Stages(StrictModel):
    shadow: StagePolicy
    silent: StagePolicy
    canary: CanaryPolicy

    @model_validator(mode="after")
    def _agreement_in_shadow(self) -> Stages:
        if self.shadow.gates.agreement_with_champion_min is None:
            raise ValueError("shadow.gates needs agreement_with_champion_min")
        return self


class Rollback(StrictModel):
    error_rate_max: float = Field(gt=0, lt=1)
    latency_p99_ms_max: float = Field(gt=0)
    on_alerts: tuple[
        Literal["performance", "calibration", "data_fault", "data_drift", "score_drift"], ...
    ]


class RolloutPolicy(StrictModel):
    stages: Stages
    rollback: Rollback
    # From this stage on the candidate's answers reach clinicians: entering it needs every
    # registry sign-off (config/governance.yaml). Shadow and silent expose no one.
    signoffs_required_from: Literal["canary", "full"] = "canary"

    def stage(self, name: Stage) -> StagePolicy:
        if name == "full":
            raise RolloutPolicyError("the full stage has no gates: it is the end of the rollout")
        policy: StagePolicy = getattr(self.stages, name)
        return policy


def load_rollout_policy(path: Path | str | None = None) -> RolloutPolicy:
    return load_yaml_model(
        Path(path) if path else config_path("rollout.yaml"),
        RolloutPolicy,
        RolloutPolicyError,
        "rollout policy",
    )
