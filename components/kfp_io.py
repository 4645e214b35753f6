"""Small helpers that components use to hand gate reports to the Kubeflow dashboard.

Typed against duck-typed artifacts (anything with ``.path`` and ``log_metric``), so kfp is
needed only where the components are defined.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol

from hospital_mlops import artifacts


class _PathArtifact(Protocol):
    path: str


def publish_gate_outputs(
    ctx: Any, layer: str, report: _PathArtifact, page: _PathArtifact, metrics: Any
) -> None:
    from hospital_mlops.steps.data import load_gates

    gate = load_gates(ctx).get(layer)
    if gate is None:
        return
    stem = ctx.gates_dir / layer
    for src, dst in ((stem.with_suffix(".md"), report), (stem.with_suffix(".html"), page)):
        Path(dst.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst.path)
    metrics.log_metric("checks", gate.checks_run)
    metrics.log_metric("failures", len(gate.failures))
    metrics.log_metric("passed", 1 if gate.success else 0)
    for batch, rows in gate.rows.items():
        metrics.log_metric(f"rows_{batch}", rows)


ROC_POINTS = 200  # the dashboard draws the curve from these; more adds size, not information


def publish_model_metrics(train_dir: Path, summary: dict[str, Any], roc: Any, metrics: Any) -> None:
    """ROC curve and confusion matrix (at the primary threshold) as KFP ClassificationMetrics,
    and the headline numbers as KFP Metrics."""
    import numpy as np
    import pandas as pd
    from sklearn.metrics import confusion_matrix, roc_curve

    predictions = pd.read_parquet(train_dir / artifacts.TEST_PREDICTIONS)
    fpr, tpr, thresholds = roc_curve(predictions["label"], predictions["score"])
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).astype(int))
    # KFP wants finite thresholds; roc_curve starts at +inf
    finite = np.where(np.isfinite(thresholds[keep]), thresholds[keep], 1.0)
    roc.log_roc_curve(fpr[keep].tolist(), tpr[keep].tolist(), finite.tolist())
    threshold = summary["headline"]["threshold"]
    matrix = confusion_matrix(predictions["label"], (predictions["score"] >= threshold).astype(int))
    roc.log_confusion_matrix(["no readmission", "readmitted ≤30d"], matrix.tolist())
    for name, value in summary["headline"].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            metrics.log_metric(name, float(value))
    metrics.log_metric("gates_passed", 1 if summary["gates"]["passed"] else 0)
