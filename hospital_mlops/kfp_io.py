"""Small helpers that components use to hand gate reports to the Kubeflow dashboard.

Typed against duck-typed artifacts (anything with ``.path`` and ``log_metric``) so the library
keeps no kfp import.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Protocol


class _PathArtifact(Protocol):
    path: str


def publish_gate_outputs(
    ctx: Any, layer: str, report: _PathArtifact, page: _PathArtifact, metrics: Any
) -> None:
    from hospital_mlops.stages import load_gates

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
