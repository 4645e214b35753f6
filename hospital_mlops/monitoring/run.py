"""One monitoring run: the monitored version's logged predictions with their outcomes, the
detector's results and the registered baseline → windows and alerts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from hospital_mlops import artifacts
from hospital_mlops.drift.store import DriftStore, results_table
from hospital_mlops.features import ServedInputs
from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.monitoring.alerts import Alert, alerts_for
from hospital_mlops.monitoring.breakdowns import Cell, breakdown_cells
from hospital_mlops.monitoring.feedback import responses
from hospital_mlops.monitoring.logged import logged_predictions
from hospital_mlops.monitoring.policy import MonitoringPolicy
from hospital_mlops.monitoring.subgroup_calibration import subgroup_calibration
from hospital_mlops.monitoring.subgroup_results import SubgroupCalibration
from hospital_mlops.monitoring.subgroup_settings import CalibrationSettings
from hospital_mlops.monitoring.windows import Baseline, Window, compute_windows


class MonitoringError(ValueError):
    pass


@dataclass(frozen=True)
class MonitoringRun:
    model: str  # name/version
    baseline: Baseline
    predictions: int
    with_outcomes: int
    windows: list[Window]
    alerts: list[Alert]
    policy: MonitoringPolicy
    breakdowns: list[Cell] = field(default_factory=list)
    subgroup_calibration: SubgroupCalibration | None = None

    def as_dict(self) -> dict[str, Any]:
        b = self.baseline
        t = self.policy.thresholds
        return {
            "model": self.model,
            "policy": {
                "window_hours": self.policy.windows.length_hours,
                "score_drift_p_value": t.score_drift_p_value,
                "auroc_drop": t.auroc_drop,
                "ece_max": t.ece_max,
                "override_reasons": list(self.policy.feedback.override_reasons),
            },
            "baseline": {
                "auroc": b.auroc,
                "ece": b.ece,
                "observed_to_expected": b.observed_to_expected,
                "alerts_per_100": b.alerts_per_100,
                "event_rate": b.event_rate,
                "reference_scores": len(b.scores),
            },
            "predictions": self.predictions,
            "with_outcomes": self.with_outcomes,
            "windows": [w.as_dict() for w in self.windows],
            "alerts": [a.as_dict() for a in self.alerts],
            "breakdowns": [c.as_dict() for c in self.breakdowns],
            "subgroup_calibration": (
                None if self.subgroup_calibration is None else self.subgroup_calibration.as_dict()
            ),
        }


def drift_results(store: DriftStore, model_version: str) -> pd.DataFrame:
    """The detector's results for ``name/version``: ``tested_at``, ``is_drift``,
    ``drifted_features``, and its tiered ``alerts`` (empty for a result decided by p-values)."""
    r = results_table
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(r.c.tested_at, r.c.is_drift, r.c.result).where(
                r.c.model_version == model_version
            )
        ).all()
    results = [json.loads(x) for _, _, x in rows]
    return pd.DataFrame(
        {
            "tested_at": pd.to_datetime([t for t, _, _ in rows], utc=True, format="ISO8601"),
            "is_drift": [bool(d) for _, d, _ in rows],
            "drifted_features": [x.get("drifted_features", []) for x in results],
            "decided_by": [x.get("decided_by", "p_value") for x in results],
            "alerts": [x.get("alerts", []) for x in results],
        }
    )


def feed_faults(results: pd.DataFrame) -> pd.DataFrame:
    """Only the act tier's data faults of another version's detector results: what they say
    about the feed both versions read, not about that version's reference."""
    if results.empty:
        return results
    alerts = [[a for a in found if a["tier"] == "act"] for found in results["alerts"]]
    return results.assign(
        alerts=alerts,
        is_drift=[bool(a) for a in alerts],
        drifted_features=[[] for _ in alerts],
        decided_by="tiers",
    )[[bool(a) for a in alerts]]


def baseline_from_registry(model: str, ref: str) -> tuple[Baseline, int]:
    """The registered version's last validated period: its test-period evaluation and the risks
    it gave that period (``evidence/test_predictions.parquet``, every encounter of it, with
    labels); and its version number. The drift detector's reference is a label-free sample of
    the same period."""
    from hospital_mlops.governance import registry

    version = registry.resolve(registry.client(), model, ref)
    evaluation = registry.evidence_file(version.run_id, artifacts.evidence(artifacts.EVALUATION))
    test_period = registry.evidence_file(
        version.run_id, artifacts.evidence(artifacts.TEST_PREDICTIONS)
    )
    if evaluation is None or test_period is None:
        raise MonitoringError(
            f"{model} version {version.version} lacks its evaluation evidence: no baseline to "
            "monitor against"
        )
    with open(evaluation, encoding="utf-8") as handle:
        record = json.load(handle)
    scores = pd.read_parquet(Path(test_period), columns=["score"])["score"].to_numpy("float64")
    label = f"{model}/{version.version}"
    return Baseline.from_evidence(label, record, scores), int(version.version)


def validated_period_from_registry(model: str, ref: str, columns: list[str]) -> pd.DataFrame | None:
    """The registered version's test-period predictions (``evidence/test_predictions.parquet``),
    only those of ``columns`` it holds (never its encounter or patient tokens); None when the
    version has none."""
    import pyarrow.parquet as pq

    from hospital_mlops.governance import registry

    version = registry.resolve(registry.client(), model, ref)
    path = registry.evidence_file(version.run_id, artifacts.evidence(artifacts.TEST_PREDICTIONS))
    if path is None:
        return None
    held = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in columns if c in held])


def served_of(model: str, ref: str) -> ServedInputs:
    """How the version is served: its feature set's inputs and subgroup maps."""
    from hospital_mlops.features import feature_set_named, served_inputs
    from hospital_mlops.governance import registry

    version = registry.resolve(registry.client(), model, ref)
    name = str(version.tags.get("feature_set_version", "")).split("@")[0]
    fs = feature_set_named(name)
    if fs is None:
        raise MonitoringError(f"{model} version {version.version}: feature set {name!r} unknown")
    return served_inputs(fs)


def request_fields(model: str, ref: str) -> set[str]:
    """The inputs the version's requests carry: its feature set's served inputs."""
    return set(served_of(model, ref).inputs)


def registered_use_case(model: str, ref: str) -> str:
    """The use case a version was registered for (its registry tag; versions from before use
    cases were named belong to the first)."""
    from hospital_mlops.governance import registry
    from hospital_mlops.use_case import load_use_case

    version = registry.resolve(registry.client(), model, ref)
    return load_use_case(use_case=str(version.tags.get("use_case") or "") or None).id


def run_monitoring(
    model: str,
    ref: str,
    policy: MonitoringPolicy,
    log: PredictionLog,
    store: DriftStore,
) -> MonitoringRun:
    """Monitor ``model``@``ref`` under ``policy`` as its use case declares it (its horizon,
    break-downs and thresholds: ``policy.for_use_case``)."""
    baseline, version = baseline_from_registry(model, ref)
    policy = policy.for_use_case(registered_use_case(model, str(version)))
    served = served_of(model, str(version))
    policy.breakdowns.check_fields(set(served.inputs), baseline.model)
    recipe = served.recipe
    settings = CalibrationSettings.from_policy(
        policy,
        policy.subgroup_calibration.false_alarm_rate,
        maps=recipe.subgroups if recipe else None,
    )
    frame = logged_predictions(log, model, version, policy.breakdowns.by)
    answered = responses(log, model, version)
    if not policy.windows.feedback_expected and answered["response"].isna().all():
        answered = None  # no feedback channel yet: no workflow numbers, rather than all-ignored
    windows = compute_windows(
        frame, baseline, policy, drift_results(store, baseline.model), answered
    )
    by_subgroup = subgroup_calibration(
        frame,
        validated_period_from_registry(model, str(version), settings.test_period_columns()),
        settings,
        datetime.now(UTC),
    )
    return MonitoringRun(
        model=baseline.model,
        baseline=baseline,
        predictions=len(frame),
        with_outcomes=int(frame["outcome"].notna().sum()),
        windows=windows,
        alerts=[
            *alerts_for(windows, baseline, policy, datetime.now(UTC)),
            *subgroup_alerts(by_subgroup, policy),
        ],
        policy=policy,
        breakdowns=breakdown_cells(frame, policy),
        subgroup_calibration=by_subgroup,
    )


def subgroup_alerts(by_subgroup: SubgroupCalibration, policy: MonitoringPolicy) -> list[Alert]:
    """A subgroup outside its band on matured outcomes is a demonstrated impact: the act tier,
    for calibration's owner, like a whole window's."""
    return [
        Alert(
            "calibration",
            policy.owners["calibration"],
            "critical",
            f"by subgroup, {a.message}",
            a.window_start,
        )
        for a in by_subgroup.alerts
    ]
