"""The monitoring pipeline's steps as functions over paths (the KFP components call these):
monitor → decide on retraining → retrain on the newest published snapshot → compare the
challenger with the champion on the recent window.

Nothing here starts a rollout: a challenger that passes the comparison waits for
``hmlops rollout advance``, which a person runs (and the audit log records).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hospital_mlops import artifacts
from hospital_mlops.monitoring.policy import MonitoringPolicy, load_monitoring_policy


def _policy(path: str) -> MonitoringPolicy:
    return load_monitoring_policy(Path(path) if path else None)


def monitor(model: str, ref: str, policy_path: str, out_dir: Path) -> dict[str, Any]:
    """Windows and alerts → ``run.json``, ``monitoring_report.html``, ``summary.md``."""
    from hospital_mlops.drift.store import DriftStore
    from hospital_mlops.inference.config import load_serving_config
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.publish import prometheus_text
    from hospital_mlops.monitoring.report import monitoring_html
    from hospital_mlops.monitoring.run import run_monitoring

    log = PredictionLog()
    store = DriftStore(load_serving_config().drift.store_url)
    try:
        result = run_monitoring(model, ref, _policy(policy_path), log, store)
    finally:
        store.close()
        log.close()
    summary = result.as_dict()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / artifacts.MONITORING_REPORT).write_text(monitoring_html(summary), encoding="utf-8")
    (out_dir / "metrics.prom").write_text(prometheus_text(summary))
    lines = [
        f"# Monitoring: {summary['model']}",
        "",
        f"{summary['predictions']} predictions, {summary['with_outcomes']} with outcomes, "
        f"{len(summary['windows'])} windows.",
        "",
    ]
    lines += [f"- **{a['severity']}** {a['kind']} → {a['owner']}: {a['message']}"
              for a in summary["alerts"]] or ["No alerts."]  # fmt: skip
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    return summary


def _registered_at(version: Any) -> datetime:
    return datetime.fromtimestamp(version.creation_timestamp / 1000, UTC)


def decide(
    run: dict[str, Any],
    model: str,
    ref: str,
    policy_path: str,
    protocol_change: str = "",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The retraining decision for the monitored version, with the registry's dates."""
    from hospital_mlops.governance import registry
    from hospital_mlops.monitoring.triggers import retraining_decision

    policy = _policy(policy_path)
    c = registry.client()
    champion = registry.resolve(c, model, ref)
    decision = retraining_decision(
        run,
        policy.retraining,
        min_predictions=policy.windows.min_predictions,
        champion_registered_at=_registered_at(champion),
        now=now or datetime.now(UTC),
        protocol_change=protocol_change,
        pending_challenger=_waiting_challenger(model, int(champion.version)),
    )
    return {"champion": int(champion.version), **decision.as_dict()}


def _waiting_challenger(model: str, champion: int) -> int | None:
    """The newest version after the champion that may still roll out: not retired, and not
    left rolled back by its last rollout (a rolled-back candidate must not hold retraining)."""
    from hospital_mlops.governance import registry
    from hospital_mlops.rollout.audit import read_audit, rolled_back_versions
    from hospital_mlops.rollout.commands import rollout_dir

    rolled_back = rolled_back_versions(read_audit(rollout_dir() / "audit.jsonl"), model)
    newer = [
        int(v.version)
        for v in registry.client().search_model_versions(f"name='{model}'")
        if int(v.version) > champion
        and int(v.version) not in rolled_back
        and not v.tags.get(registry.RETIRED_TAG)
    ]
    return max(newer, default=None)


def newest_snapshot(
    store_root: Path, source: str, feature_set_version: str | None = None
) -> dict[str, Any] | None:
    """The newest published feature snapshot of ``source`` (the publish index); with
    ``feature_set_version``, of that feature set only (one store holds every use case's)."""
    from hospital_mlops.data.published_index import read_entries

    mine = [
        e
        for e in read_entries(store_root)
        if e.get("source") == source
        and (feature_set_version is None or e.get("feature_set_version") == feature_set_version)
    ]
    return max(mine, key=lambda e: e["published_at"]) if mine else None


def _source_of(feature_set_version: str | None) -> str:
    from hospital_mlops.features import feature_set_named

    found = feature_set_named(str(feature_set_version or "").split("@")[0])
    if found is None:
        raise ValueError(
            f"the champion's feature set {feature_set_version!r} is not defined here: give the "
            "source to retrain on"
        )
    return found.source


def retrain(
    source: str,
    use: str,
    store_root: Path,
    run_id: str,
    catalog_path: str,
    model: str,
    ref: str,
    work_dir: Path,
) -> dict[str, Any]:
    """Train, evaluate and (gates permitting) register on the newest published snapshot. Refuses
    to retrain on the very snapshot the champion learnt from: that would be the same model."""
    from hospital_mlops.governance import registry
    from hospital_mlops.steps.data import RunContext
    from hospital_mlops.steps.model import run_model_in_process

    champion = registry.resolve(registry.client(), model, ref)
    # the champion's own feature set, source and use case: a store holds every use case's
    # snapshots ("" source or use: the champion's)
    feature_set = champion.tags.get("feature_set_version") or None
    source = source or _source_of(feature_set)
    use_case = champion.tags.get("use_case") or None
    latest = newest_snapshot(store_root, source, feature_set)
    from hospital_mlops.use_case import load_use_case, purpose_of

    if use_case is not None:  # the champion's own use case reads its data under its purpose
        use = load_use_case(use_case=use_case).purpose or use
    use = use or purpose_of(None, None)  # a version from before use cases: the first's
    learnt_from = champion.tags.get("lineage.features_sha256", "")
    if latest is None:
        return {"retrained": False, "version": 0, "reason": f"no published {source} snapshot"}
    if latest["sha256"] == learnt_from:
        return {
            "retrained": False,
            "version": 0,
            "reason": (
                f"the newest published {source} snapshot ({latest['sha256'][:12]}) is the one "
                f"version {champion.version} was trained on: run the data pipeline on a newer "
                "extract first"
            ),
        }
    ctx = RunContext(source, use, store_root, run_id, catalog_path or None, use_case)
    result = run_model_in_process(ctx, Path(latest["path"]), work_dir)
    version = int(result.get("version") or 0)
    return {
        "retrained": True,
        "version": version,
        "features_sha256": latest["sha256"],
        "reason": "registered" if version else "the new model failed its gates: not registered",
    }


def compare(
    model: str, ref: str, challenger: int, policy_path: str, until: datetime | None = None
) -> dict[str, Any]:
    """The challenger against the champion on the policy's recent window."""
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.challenger import ChallengerPolicy, compare_on_window

    policy = _policy(policy_path)
    champion = int(registry.resolve(registry.client(), model, ref).version)
    end = until or datetime.now(UTC)
    start = end - timedelta(days=policy.retraining.comparison_window_days)
    log = PredictionLog()
    try:
        return compare_on_window(
            log,
            model,
            champion,
            challenger,
            start,
            end,
            ChallengerPolicy(
                max_auroc_loss=policy.retraining.challenger_max_auroc_loss,
                ece_max=policy.thresholds.ece_max,
                min_outcomes=policy.windows.min_outcomes,
            ),
        )
    finally:
        log.close()
