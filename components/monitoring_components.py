"""The monitoring pipeline's steps as KFP components: monitor → retraining decision → retrain →
challenger comparison.

Same rules as the other components: real annotations (no ``from __future__``), bodies import
the library and call one function of ``hospital_mlops.steps.monitoring``, and the
image is applied by ``build``. Connection settings (registry, prediction log, drift store)
arrive as parameters and are set in the step's environment, so a cluster passes Secret-backed
values and a laptop passes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp.dsl import HTML, Artifact, Input, Markdown, Metrics, Output

from components.kfp_component import component_builder


def monitor_op(
    model: str,
    ref: str,
    policy_path: str,
    mlflow_tracking_uri: str,
    prediction_log_url: str,
    drift_store_url: str,
    run: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> None:
    """Windows and alerts of the monitored version against its validated baseline."""
    import os
    import shutil
    from pathlib import Path

    for name, value in (
        ("MLFLOW_TRACKING_URI", mlflow_tracking_uri),
        ("HMLOPS_PREDICTION_LOG_URL", prediction_log_url),
        ("HMLOPS_DRIFT_DB_URL", drift_store_url),
    ):
        if value:
            os.environ[name] = value
    from hospital_mlops import artifacts
    from hospital_mlops.steps import monitoring as monitoring_steps

    out = Path(run.path)
    result = monitoring_steps.monitor(model, ref, policy_path, out)
    shutil.copyfile(out / artifacts.MONITORING_REPORT, report.path)
    shutil.copyfile(out / "summary.md", summary.path)
    metrics.log_metric("predictions", result["predictions"])
    metrics.log_metric("with_outcomes", result["with_outcomes"])
    metrics.log_metric("alerts", len(result["alerts"]))
    if result["windows"]:
        latest = result["windows"][-1]
        for key in ("estimated_auroc", "alerts_per_100"):
            metrics.log_metric(f"latest_window_{key}", latest[key])
        if latest["auroc"] is not None:
            metrics.log_metric("latest_window_auroc", latest["auroc"])


def decide_op(
    model: str,
    ref: str,
    policy_path: str,
    mlflow_tracking_uri: str,
    protocol_change: str,
    run: Input[Artifact],
    decision: Output[Artifact],
) -> bool:
    """Whether a trigger fires (critical decay, persistent drift, schedule, protocol change)."""
    import json
    import os
    from pathlib import Path

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from hospital_mlops.steps import monitoring as monitoring_steps

    summary = json.loads((Path(run.path) / "run.json").read_text())
    result = monitoring_steps.decide(summary, model, ref, policy_path, protocol_change)
    Path(decision.path).write_text(json.dumps(result, indent=2) + "\n")
    return bool(result["retrain"])


def retrain_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    mlflow_tracking_uri: str,
    model: str,
    ref: str,
    summary: Output[Markdown],
) -> int:
    """Train, evaluate and register on the newest published snapshot; the registered version
    (0: nothing registered, and the summary says why).

    One output parameter, ``Output``: kfp.local resolves a condition on a task's ``Output`` but
    not on a named output (``retrain-op-version`` reads as a missing pipeline input, and the
    branch behind it is skipped with a warning), so the version is the return value itself."""
    import os
    import tempfile
    from pathlib import Path

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from hospital_mlops.steps import monitoring as monitoring_steps

    with tempfile.TemporaryDirectory() as work:
        result = monitoring_steps.retrain(
            source, use, Path(store_root), run_id, catalog_path, model, ref, Path(work)
        )
    version = int(result["version"])
    title = f"Version {version} registered" if version else "Nothing registered"
    Path(summary.path).write_text(f"# {title}\n\n{result['reason']}\n")
    return version


def compare_op(
    model: str,
    ref: str,
    challenger: int,
    policy_path: str,
    mlflow_tracking_uri: str,
    prediction_log_url: str,
    comparison: Output[Artifact],
    summary: Output[Markdown],
) -> bool:
    """The challenger against the champion on the recent window; whether it may start a rollout."""
    import json
    import os
    from pathlib import Path

    for name, value in (
        ("MLFLOW_TRACKING_URI", mlflow_tracking_uri),
        ("HMLOPS_PREDICTION_LOG_URL", prediction_log_url),
    ):
        if value:
            os.environ[name] = value
    from hospital_mlops.steps import monitoring as monitoring_steps

    result = monitoring_steps.compare(model, ref, challenger, policy_path)
    Path(comparison.path).write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Version {challenger} against the champion on the recent window", ""]
    lines += [
        f"- {c['name']}: {'pass' if c['passed'] else 'FAIL'} "
        f"(observed {c['observed']:.4f}, limit {c['limit']})"
        for c in result["checks"]
    ]
    Path(summary.path).write_text("\n".join(lines) + "\n")
    return bool(result["challenger_fit_for_rollout"])


@dataclass(frozen=True)
class MonitoringComponents:
    monitor: Callable[..., Any]
    decide: Callable[..., Any]
    retrain: Callable[..., Any]
    compare: Callable[..., Any]


def build(image: str) -> MonitoringComponents:
    component = component_builder(image)
    return MonitoringComponents(
        monitor=component(monitor_op),
        decide=component(decide_op),
        retrain=component(retrain_op),
        compare=component(compare_op),
    )
