"""The batch-scoring pipeline on KFP: compile to IR, and run locally through kfp.local."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hospital_mlops import artifacts


def compile_batch(out: Path, image: str | None = None) -> Path:
    from kfp import compiler

    from components.data_components import DEFAULT_IMAGE
    from pipelines.batch_pipeline import make_batch_pipeline
    from pipelines.runner import validate_ir

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_batch_pipeline(image or DEFAULT_IMAGE), str(out))
    validate_ir(out)
    return out


def run_batch_locally(
    *,
    out: Path,
    model: str,
    ref: str,
    store_root: Path,
    census_size: int = 0,
    capacity: int = 0,
) -> dict[str, Any]:
    """One batch run through kfp.local; returns the worklist's summary and where it is."""
    from pipelines.batch_pipeline import make_batch_pipeline
    from pipelines.runner import local_subprocess_root, stdout_to_stderr

    run_id, root = local_subprocess_root(out, "batch")
    with stdout_to_stderr():
        make_batch_pipeline()(
            model=model,
            ref=ref,
            store_root=str(store_root.resolve()),
            census_size=census_size,
            capacity=capacity,
            mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        )
    found: dict[str, Any] = {"run_id": run_id, "pipeline_root": str(root)}
    for summary in root.rglob(artifacts.WORKLIST_SUMMARY):
        found["worklist"] = {**json.loads(summary.read_text()), "out": str(summary.parent)}
    return found
