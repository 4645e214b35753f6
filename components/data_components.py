"""The data pipeline's KFP components (no `from __future__ import annotations`: KFP reads the
annotations as types). Each body imports the library and calls one stage.

KFP ships a component's *source* to the pod, so bodies import inside the function and hold no
logic of their own. ``build`` applies the image at call time, so the compiled IR can name any
registry's image (``--image``) without editing code.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Output

from components.kfp_component import component_builder

DEFAULT_IMAGE = "registry.hospital.example/hospital-mlops/pipeline:0.1.0"


def ingest_op(
    source: str,
    use: str,
    extract: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    raw_manifest: Output[Artifact],
    gate_report: Output[Markdown],
    gate_page: Output[HTML],
    gate_metrics: Output[Metrics],
) -> None:
    """Snapshot the extract (raw zone, sha256-addressed) and run the raw gate."""
    import json
    from pathlib import Path

    from components.kfp_io import publish_gate_outputs
    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    try:
        manifest, _ = data_steps.ingest(ctx, Path(extract))
    finally:
        publish_gate_outputs(ctx, "ingest", gate_report, gate_page, gate_metrics)
    Path(raw_manifest.path).write_text(json.dumps(manifest))
    raw_manifest.metadata.update({"sha256": manifest["sha256"], "zone": "raw (PHI)"})


def normalize_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    raw_manifest: Input[Artifact],
    normalized: Output[Dataset],
) -> None:
    """Types, canonical IDs and units, UTC, patient merges, PHI tokens (HMAC key from a Secret)."""
    import json
    from pathlib import Path

    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    raw = json.loads(Path(raw_manifest.path).read_text())
    manifest = data_steps.normalize(ctx, raw, Path(normalized.path))
    normalized.metadata.update(
        {"sha256": manifest["sha256"], "hmac_key_id": manifest["hmac_key_id"]}
    )


def validate_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    normalized: Input[Dataset],
    gate_report: Output[Markdown],
    gate_page: Output[HTML],
    gate_metrics: Output[Metrics],
) -> None:
    """The content gate on the normalized layer, generated from the catalog."""
    from pathlib import Path

    from components.kfp_io import publish_gate_outputs
    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    try:
        data_steps.validate(ctx, Path(normalized.path))
    finally:
        publish_gate_outputs(ctx, "validate", gate_report, gate_page, gate_metrics)


def features_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    normalized: Input[Dataset],
    features: Output[Dataset],
    gate_report: Output[Markdown],
    gate_page: Output[HTML],
    gate_metrics: Output[Metrics],
) -> None:
    """Versioned features (the module serving imports too) and the feature gate."""
    from pathlib import Path

    from components.kfp_io import publish_gate_outputs
    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    try:
        manifest, _ = data_steps.features(ctx, Path(normalized.path), Path(features.path))
    finally:
        publish_gate_outputs(ctx, "features", gate_report, gate_page, gate_metrics)
    features.metadata.update(
        {"sha256": manifest["sha256"], "feature_set_version": manifest["feature_set_version"]}
    )


def publish_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    features: Input[Dataset],
) -> str:
    """Atomic publish of the validated snapshot; returns its sha256."""
    from pathlib import Path

    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    return str(data_steps.publish(ctx, Path(features.path))["sha256"])


def finalize_op(
    source: str,
    use: str,
    store_root: str,
    run_id: str,
    catalog_path: str,
    use_case: str,
    train_model: bool,
) -> str:
    """Exit handler: record the run (succeeded or failed) in lineage with every gate's result."""
    import json
    from pathlib import Path

    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(
        source, use, Path(store_root), run_id, catalog_path or None, use_case or None
    )
    summary = data_steps.finalize_run(ctx, expect_model=train_model)
    return json.dumps({"status": summary["status"], "lineage_path": summary["lineage_path"]})


@dataclass(frozen=True)
class DataComponents:
    ingest: Callable[..., Any]
    normalize: Callable[..., Any]
    validate: Callable[..., Any]
    features: Callable[..., Any]
    publish: Callable[..., Any]
    finalize: Callable[..., Any]


def build(image: str = DEFAULT_IMAGE) -> DataComponents:
    component = component_builder(image)
    return DataComponents(
        ingest=component(ingest_op),
        normalize=component(normalize_op),
        validate=component(validate_op),
        features=component(features_op),
        publish=component(publish_op),
        finalize=component(finalize_op),
    )
