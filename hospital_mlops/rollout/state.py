"""The rollout state file: which version is rolling out of which model, at which stage since when.

One JSON file per registered model. It is validated on every load against the policy (a stage
that does not exist, a canary step past the last one, a history that skips a stage) and against
the audit log, whose last decision for the model must have left it where the file says. A file
edited by hand into an impossible or unrecorded state is refused, naming what is wrong; nothing
acts on it. Writes are atomic (a temporary file renamed over the old one).
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from hospital_mlops.config_files import StrictModel, yaml_path
from hospital_mlops.rollout.gates import RolloutState
from hospital_mlops.rollout.policy import STAGES, RolloutPolicy

Phase = Literal["shadow", "silent", "canary", "full", "rolled_back"]


class RolloutStateError(ValueError):
    """The state file is unreadable, malformed, impossible, or disagrees with the audit log."""


class StageEntry(StrictModel):
    stage: Phase
    canary_percent: int | None = None
    entered_at: datetime


class RolloutRecord(StrictModel):
    schema_version: Literal[1] = 1
    model: str = Field(min_length=1)
    candidate_version: int = Field(ge=1)
    champion_version: int | None = Field(default=None, ge=1)  # None: the first deployment
    stage: Phase
    canary_step: int = Field(default=0, ge=0)
    stage_started_at: datetime
    # the service metrics when the stage began, so its gates see only the stage's requests
    metrics_at_stage_start: dict[str, Any] | None = None
    history: tuple[StageEntry, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _coherent(self) -> RolloutRecord:
        if self.candidate_version == self.champion_version:
            raise ValueError("the candidate is already the champion")
        if any(t.tzinfo is None for t in [self.stage_started_at, *self._entered()]):
            raise ValueError("times need a UTC offset")
        if self.stage != "canary" and self.canary_step:
            raise ValueError(f"canary_step {self.canary_step} outside the canary stage")
        last = self.history[-1]
        if last.stage != self.stage or last.entered_at != self.stage_started_at:
            raise ValueError(
                f"stage {self.stage!r} since {self.stage_started_at.isoformat()} is not the last "
                f"history entry ({last.stage!r} since {last.entered_at.isoformat()})"
            )
        if self.history[0].stage != "shadow":
            raise ValueError("a rollout begins in shadow")
        times = self._entered()
        if any(b < a for a, b in pairwise(times)):
            raise ValueError("history goes back in time")
        for before, after in pairwise(self.history):
            if not _may_follow(before, after):
                raise ValueError(f"history: {after.stage!r} cannot follow {before.stage!r}")
        return self

    def _entered(self) -> list[datetime]:
        return [h.entered_at for h in self.history]

    def check_against(self, policy: RolloutPolicy) -> None:
        """Where the policy decides what is possible: the canary steps (of a rollout still in
        progress; a finished one ran under the policy of its day)."""
        if not self.active:
            return
        steps = policy.stages.canary.steps
        if self.stage == "canary" and self.canary_step >= len(steps):
            raise RolloutStateError(
                f"canary_step {self.canary_step}: the policy has {len(steps)} canary steps "
                f"({', '.join(f'{s}%' for s in steps)})"
            )
        percents = [h.canary_percent for h in self.history if h.stage == "canary"]
        if any(p not in steps for p in percents):
            raise RolloutStateError(
                f"history: canary at {percents}% but the policy's steps are {list(steps)}"
            )

    def position(self) -> RolloutState:
        """Where the gates see the rollout (a rolled-back one has no position)."""
        if self.stage == "rolled_back":
            raise RolloutStateError(f"{self.model}'s rollout was rolled back")
        return RolloutState(self.stage, self.canary_step)

    @property
    def active(self) -> bool:
        return self.stage not in ("full", "rolled_back")


def _may_follow(before: StageEntry, after: StageEntry) -> bool:
    if after.stage == "rolled_back":
        return before.stage not in ("full", "rolled_back")
    if before.stage in ("full", "rolled_back"):
        return False
    if before.stage == "canary" and after.stage == "canary":
        return (before.canary_percent or 0) < (after.canary_percent or 0)
    return STAGES.index(after.stage) == STAGES.index(before.stage) + 1


def state_path(directory: Path, model: str) -> Path:
    return directory / f"{model}.state.json"


def load_state(path: Path, policy: RolloutPolicy) -> RolloutRecord | None:
    """The model's rollout, or None when it never had one."""
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RolloutStateError(f"rollout state {path} is not readable JSON: {exc}") from None
    try:
        record = RolloutRecord.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise RolloutStateError(
            f"rollout state {path} is impossible (edited by hand?):\n" + "\n".join(lines)
        ) from None
    try:
        record.check_against(policy)
    except RolloutStateError as exc:
        raise RolloutStateError(f"rollout state {path} is impossible: {exc}") from None
    return record


def save_state(path: Path, record: RolloutRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(record.model_dump(mode="json"), indent=2) + "\n")
    os.replace(partial, path)
