"""The model half of the pipeline as KFP components: train → evaluate → (gate) → register.

Same rules as ``data_components``: real annotations (no ``from __future__``), bodies import the
library and call one stage, and the image is applied by ``build``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp.dsl import HTML, Artifact, ClassificationMetrics, Input, Markdown, Metrics, Model, Output

from components.kfp_component import component_builder


def train_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    published_sha256: str,
    trained: Output[Model],
) -> None:
    """Time-based split of the published snapshot; XGBoost + calibration; comparator."""
    from pathlib import Path

    from hospital_mlops import artifacts
    from hospital_mlops.steps import data as data_steps
    from hospital_mlops.steps import model as model_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    features_dir = artifacts.published_features(Path(store_root)) / published_sha256
    training = model_steps.train(ctx, features_dir, Path(trained.path))
    trained.metadata.update(
        {
            "model_sha256": training["model_sha256"],
            "features_sha256": training["features_sha256"],
            "feature_set_version": training["feature_set_version"],
        }
    )


def evaluate_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    trained: Input[Model],
    evidence: Output[Artifact],
    report: Output[Markdown],
    report_page: Output[HTML],
    roc: Output[ClassificationMetrics],
    metrics: Output[Metrics],
) -> bool:
    """Evaluate on the test slice, check the pre-declared gates; returns whether all passed."""
    import shutil
    from pathlib import Path

    from components import kfp_io
    from hospital_mlops import artifacts
    from hospital_mlops.steps import data as data_steps
    from hospital_mlops.steps import model as model_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    summary = model_steps.evaluate(ctx, Path(trained.path), Path(evidence.path))
    shutil.copyfile(Path(evidence.path) / artifacts.VALIDATION_REPORT_MD, report.path)
    shutil.copyfile(Path(evidence.path) / artifacts.VALIDATION_REPORT_HTML, report_page.path)
    kfp_io.publish_model_metrics(Path(trained.path), summary, roc, metrics)
    return bool(summary["gates"]["passed"])


def register_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    mlflow_tracking_uri: str,
    trained: Input[Model],
    evidence: Input[Artifact],
) -> str:
    """Log the MLflow run with the evidence; register a version only if the gates passed."""
    import json
    import os
    from pathlib import Path

    if mlflow_tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    from hospital_mlops.steps import data as data_steps
    from hospital_mlops.steps import model as model_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    result = model_steps.register(ctx, Path(trained.path), Path(evidence.path))
    return json.dumps({k: result[k] for k in ("name", "version", "run_id")})


@dataclass(frozen=True)
class ModelComponents:
    train: Callable[..., Any]
    evaluate: Callable[..., Any]
    register: Callable[..., Any]


def build(image: str) -> ModelComponents:
    component = component_builder(image)
    return ModelComponents(
        train=component(train_op),
        evaluate=component(evaluate_op),
        register=component(register_op),
    )
