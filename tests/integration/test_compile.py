"""The pipeline compiles to KFP IR that a cluster accepts (strict proto parse, no cluster)."""

from __future__ import annotations

import os

import pytest
import yaml

from pipelines.runner import compile_pipeline, validate_ir


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
    data_steps = {"ingest-op", "normalize-op", "validate-op", "features-op", "publish-op"}
    assert set(inner) == {*data_steps, "condition-2"}
    assert "validate-op" in inner["features-op"].dependent_tasks
    # the model half runs only when asked (train_model), and registers only past its gates
    assert "train_model" in inner["condition-2"].trigger_policy.condition
    model = spec.components["comp-condition-2"].dag.tasks
    assert set(model) == {"train-op", "evaluate-op", "condition-branches-3"}
    published = model["train-op"].inputs.parameters["published_sha256"]
    assert published.component_input_parameter == "pipelinechannel--publish-op-Output"
    branches = spec.components["comp-condition-branches-3"].dag.tasks
    conditions = sorted(t.trigger_policy.condition for t in branches.values())
    assert all("evaluate-op" in c and "Output" in c for c in conditions)
    assert {"register-op"} == set(spec.components["comp-condition-4"].dag.tasks)
    assert {"register-op-2"} == set(spec.components["comp-condition-5"].dag.tasks)
    assert {"train_model", "mlflow_tracking_uri"} <= set(spec.root.input_definitions.parameters)
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
    from hospital_mlops.cli.main import build_parser
    from pipelines.runner import submit

    # the CLI's own Namespace: every option submit() reads, the service account's default too
    host = os.environ["KFP_HOST"]
    argv = ["pipeline", "submit", "--host", host, "--experiment", "hospital-data-ci"]
    if os.environ.get("KFP_TOKEN_FILE"):
        argv += ["--token-file", os.environ["KFP_TOKEN_FILE"]]
    args = build_parser().parse_args(argv)
    assert args.service_account == "hmlops-pipeline-runner"
    result = submit(args)
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
