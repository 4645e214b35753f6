"""When monitoring starts retraining: the triggers of ``config/monitoring.yaml``'s ``retraining``
section, read from a monitoring run. Pure: the run, the registry's dates and the time in; a
decision with every reason out.

Triggers:

* a critical alert of the configured kinds (realized performance or calibration decay);
* data drift in the last N assessable windows in a row (one drifted week is noise, or a feed
  fault to fix at the source; a persistent shift is a population the model has not seen);
* schedule: the champion is older than ``max_model_age_days``;
* protocol change: a clinical protocol the model's inputs or outcome depend on changed (a new
  discharge pathway, a coding change); declared by a person, with the reason.

A trigger never retrains while a challenger already waits for its rollout: the new version
would be compared against, and replace, work nobody has looked at yet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from hospital_mlops.monitoring.policy import RetrainingPolicy

TriggerKind = Literal["performance", "calibration", "data_drift", "schedule", "protocol_change"]


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    detail: str


@dataclass(frozen=True)
class RetrainingDecision:
    retrain: bool
    triggers: list[Trigger] = field(default_factory=list)
    suppressed_because: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _drift_streak(windows: list[dict[str, Any]], min_predictions: int) -> int:
    """Consecutive assessable windows with data drift, counting back from the latest."""
    streak = 0
    for w in reversed(windows):
        if w["n"] < min_predictions:
            continue
        if not w.get("data_drift"):
            break
        streak += 1
    return streak


def retraining_decision(
    run: dict[str, Any],
    policy: RetrainingPolicy,
    *,
    min_predictions: int,
    champion_registered_at: datetime,
    now: datetime,
    protocol_change: str = "",
    pending_challenger: int | None = None,
) -> RetrainingDecision:
    """``run``: a monitoring run as ``MonitoringRun.as_dict`` (or ``hmlops monitor run --json``)."""
    triggers: list[Trigger] = []
    critical = sorted(
        {a["kind"] for a in run["alerts"] if a["severity"] == "critical"}
        & set(policy.on_critical_alerts)
    )
    for kind in critical:
        first = next(a for a in run["alerts"] if a["kind"] == kind and a["severity"] == "critical")
        triggers.append(Trigger(kind, first["message"]))
    streak = _drift_streak(run["windows"], min_predictions)
    if streak >= policy.data_drift_windows:
        triggers.append(
            Trigger("data_drift", f"input drift in the last {streak} assessable windows in a row")
        )
    age_days = (now - champion_registered_at).total_seconds() / 86400
    if age_days > policy.max_model_age_days:
        triggers.append(
            Trigger(
                "schedule",
                f"the champion was registered {age_days:.0f} days ago "
                f"(> {policy.max_model_age_days})",
            )
        )
    if protocol_change.strip():
        triggers.append(Trigger("protocol_change", protocol_change.strip()[:500]))
    if triggers and pending_challenger is not None:
        return RetrainingDecision(
            False,
            triggers,
            f"version {pending_challenger} is newer than the champion and not yet rolled out; "
            "roll it out or retire it first",
        )
    return RetrainingDecision(bool(triggers), triggers)
