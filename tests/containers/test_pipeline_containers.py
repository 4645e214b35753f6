"""The pipeline in its image: kfp.local's DockerRunner runs every step in a container of the
pipeline image (built by `make images`), and gets what the subprocess runner gets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.containers.conftest import Images
from tests.integration.conftest import hmlops, run_json


def _shas(summary: dict) -> dict[str, str]:
    return {a["name"]: a["sha256"] for a in summary["artifacts"]}


def test_data_layers_in_containers_give_the_subprocess_runs_snapshots(
    images: Images, d130_runs, tmp_path: Path
) -> None:
    _, first, _, _, _ = d130_runs  # the subprocess runner, same bundled extract
    summary, proc = run_json(
        "--source", "diabetes130", "--no-model", "--runner", "container",
        "--image", images.pipeline, "--out", str(tmp_path / "store"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["status"] == "succeeded" and summary["runner"] == "container"
    assert summary["image"] == images.pipeline  # run pinned to the digest
    ours = _shas(summary)
    assert set(ours) == {"source_extract", "raw", "normalized", "features", "published_features"}
    assert ours == {name: _shas(first)[name] for name in ours}
    assert all(g["success"] for g in summary["gates"]) and len(summary["gates"]) == 3
    # each of the six steps (ingest … publish, and the exit handler) ran in a container of it
    assert proc.stderr.count("step container ") == 6
    assert proc.stderr.count(f" of {images.pipeline}\n") == 6


def test_model_in_containers_is_the_subprocess_runs_model(
    images: Images, d130_runs, tmp_path: Path
) -> None:
    _, first, _, _, _ = d130_runs
    summary, proc = run_json(
        "--source", "diabetes130", "--runner", "container", "--image", images.pipeline,
        "--out", str(tmp_path / "store"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["status"] == "succeeded" and summary["model_gates_passed"] is True
    assert summary["model_sha256"] == first["model_sha256"]
    assert _shas(summary) == _shas(first)
    assert summary["evaluation"]["auroc"] == first["evaluation"]["auroc"]
    # registered from inside the container, in the session's registry, as a new version
    assert summary["model"]["version"] > first["model"]["version"]


def test_a_failed_gate_stops_the_run_in_containers(images: Images, tmp_path: Path) -> None:
    """kfp 2.17's DockerRunner reports a removed container as succeeded (kubeflow/pipelines
    #13332); the run keeps each step's exit status, so the steps after a failed gate never run
    and nothing is published, as with the subprocess runner."""
    out = tmp_path / "store"
    proc = hmlops(
        "pipeline", "run", "--source", "diabetes130", "--no-model", "--scenario", "assay_shift",
        "--runner", "container", "--image", images.pipeline, "--out", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["status"] == "failed"
    failed = [g for g in summary["gates"] if not g["success"]]
    assert [g["layer"] for g in failed] == ["validate"]
    assert failed[0]["failures"][0]["column"] == "num_lab_procedures"
    assert "features" not in _shas(summary)  # the features step never ran
    assert not (out / "published").exists()
    assert "Task 'validate-op' finished with status FAILURE" in _plain(proc.stderr)
    assert "features-op" not in proc.stderr


def test_an_image_that_is_not_there_is_one_clear_line(images: Images, tmp_path: Path) -> None:
    proc = hmlops(
        "pipeline", "run", "--no-model", "--runner", "container",
        "--image", "localhost/hospital-mlops/pipeline:no-such-tag", "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr + proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert "localhost/hospital-mlops/pipeline:no-such-tag is not in the local image store" in line
    assert "make images" in line


def test_a_dead_engine_is_one_clear_line(
    images: Images, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    proc = hmlops(
        "pipeline", "run", "--no-model", "--runner", "container", "--image", images.pipeline,
        "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "does not answer the Docker API" in line and "nothing.sock" in line


def test_the_ir_for_a_cluster_names_the_image_by_digest(images: Images, tmp_path: Path) -> None:
    assert "@sha256:" in images.pipeline
    out = tmp_path / "pipeline.yaml"
    proc = hmlops("pipeline", "compile", "--image", images.pipeline, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    spec = next(yaml.safe_load_all(out.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    assert len(executors) >= 8
    assert {e["container"]["image"] for e in executors.values()} == {images.pipeline}


def _plain(text: str) -> str:
    """kfp.local colours its task lines; the assertions read the words."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)
