"""The batch-scoring pipeline's step as a KFP component: a registered model scores the census of
the newest published snapshot of its feature set and writes its worklist.

Same rules as the other components: real annotations (no ``from __future__``), the body imports
the library and calls one function (``hospital_mlops.inference.batch.score_census``), and the
image is applied by ``build``. The registry's address arrives as a parameter, so a cluster
passes a Secret-backed value and a laptop passes nothing.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp.dsl import HTML, Artifact, Markdown, Metrics, Output

from components.kfp_component import component_builder


def batch_score_op(
    model: str,
    ref: str,
    store_root: str,
    census_size: int,
    capacity: int,
    mlflow_tracking_uri: str,
    worklist: Output[Artifact],
    page: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
) -> int:
    """The worklist (CSV, page and summary) of today's census; returns how many it lists.
    ``census_size``/``capacity`` 0: the use case's declared day and capacity."""
    import os
    import shutil
    from pathlib import Path

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from hospital_mlops import artifacts
    from hospital_mlops.inference.batch import score_census

    result = score_census(
        model,
        ref,
        Path(store_root),
        Path(worklist.path),
        census_size=census_size or None,
        capacity=capacity or None,
    )
    shutil.copyfile(Path(worklist.path) / artifacts.WORKLIST_HTML, page.path)
    lines = [
        f"# Worklist of {result['model']} version {result['version']}",
        "",
        f"- use case: {result['use_case']}",
        f"- census: {result['census']} encounters of snapshot {result['snapshot_sha256'][:12]}",
        f"- listed: {result['listed']} (capacity {result['capacity']})",
    ]
    Path(summary.path).write_text("\n".join(lines) + "\n")
    metrics.log_metric("census", result["census"])
    metrics.log_metric("listed", result["listed"])
    return int(result["listed"])


@dataclass(frozen=True)
class BatchComponents:
    score: Callable[..., Any]


def build(image: str) -> BatchComponents:
    return BatchComponents(score=component_builder(image)(batch_score_op))
