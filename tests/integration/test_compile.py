"""The pipeline compiles to KFP IR that a cluster accepts (strict proto parse, no cluster)."""

from __future__ import annotations

import os

import pytest
import yaml

from hospital_mlops.kfp_runner import compile_pipeline, validate_ir


def test_compiled_ir_parses_strictly_and_carries_cluster_wiring(tmp_path) -> None:
    path = compile_pipeline(
        tmp_path / "p.yaml", image="registry.hospital.example/hmlops-pipeline:1.2"
    )
    parsed = validate_ir(path)
    spec = parsed["pipeline"]
    assert spec.pipeline_info.name == "hospital-data-pipeline"
    tasks = spec.root.dag.tasks
    assert "exit-handler-1" in tasks and "finalize-op" in tasks
    inner = spec.components["comp-exit-handler-1"].dag.tasks
    assert set(inner) == {"ingest-op", "normalize-op", "validate-op", "features-op", "publish-op"}
    assert "validate-op" in inner["features-op"].dependent_tasks
    images = {e["container"]["image"] for e in spec.deployment_spec["executors"].values()}
    assert images == {"registry.hospital.example/hmlops-pipeline:1.2"}
    platform = yaml.safe_dump(list(yaml.safe_load_all(path.read_text()))[1])
    assert "hmlops-hmac-key" in platform and "HMLOPS_HMAC_KEY" in platform
    assert "hospital-mlops.io/phi" in platform and "hmlops-store" in platform


def test_a_tampered_ir_fails_the_strict_parse(tmp_path) -> None:
    path = compile_pipeline(tmp_path / "p.yaml")
    docs = list(yaml.safe_load_all(path.read_text()))
    docs[0]["root"]["dag"]["taskz"] = {}
    path.write_text(yaml.safe_dump_all(docs))
    with pytest.raises(Exception, match="taskz"):
        validate_ir(path)


@pytest.mark.skipif(not os.environ.get("KFP_HOST"), reason="needs a Kubeflow Pipelines host")
def test_submit_to_a_real_host() -> None:  # pragma: no cover - cluster only
    import argparse

    from hospital_mlops.kfp_runner import submit

    result = submit(
        argparse.Namespace(
            host=os.environ["KFP_HOST"],
            source="diabetes130",
            use="readmission_risk_model",
            input="",
            image=None,
            experiment="hospital-data-ci",
        )
    )
    assert result["kfp_run_id"]


def test_committed_ir_is_current(tmp_path) -> None:
    """GitOps deploys the committed IR: it must be what the code compiles to today."""
    from pathlib import Path

    committed = (
        Path(__file__).resolve().parents[2] / "pipelines" / "compiled" / "data_pipeline.yaml"
    )
    fresh = compile_pipeline(tmp_path / "fresh.yaml")
    assert committed.read_text() == fresh.read_text(), (
        "pipelines/compiled/data_pipeline.yaml is stale: run `make compile` and commit it"
    )
