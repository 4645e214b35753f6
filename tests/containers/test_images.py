"""The images `make images` built: what is inside them, how they run, and which layers a code
change rebuilds."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.containers.conftest import ROOT, Images, podman

NAMES = ("pipeline", "serving")


def _ref(images: Images, name: str) -> str:
    return str(getattr(images, name))


def _in(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return podman("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c", script,
                  check=False, timeout=120)  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_runs_as_uid_10001_with_no_compiler_pip_or_uv(images: Images, name: str) -> None:
    script = (
        "id -u; id -g; for t in gcc cc c++ clang make pip pip3 uv; do command -v $t; done; "
        "ls /opt; python3 -c 'import sys; print(sys.prefix)'"
    )
    proc = _in(_ref(images, name), script)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[:2] == ["10001", "10001"]
    assert lines[2:] == ["hospital-mlops", "venv", "/opt/venv"]  # no tool found, no build-tools


@pytest.mark.parametrize("name", NAMES)
def test_labels_name_the_source_revision_and_licences(images: Images, name: str) -> None:
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}",
                               _ref(images, name)).stdout)  # fmt: skip
    assert labels["org.opencontainers.image.revision"] == images.record["git_sha"]
    assert labels["org.opencontainers.image.title"] == f"hospital-mlops-{name}"
    assert labels["org.opencontainers.image.source"]
    licences = labels["org.opencontainers.image.licenses"]
    assert licences == ("Apache-2.0 AND BUSL-1.1" if name == "serving" else "Apache-2.0")
    env = podman("image", "inspect", "--format", "{{json .Config.Env}}", _ref(images, name))
    assert f"HMLOPS_GIT_SHA={images.record['git_sha']}" in json.loads(env.stdout)


def test_the_serving_image_has_no_pipeline_packages_and_the_pipeline_image_no_servers(
    images: Images,
) -> None:
    modules = ["kfp", "great_expectations", "fairlearn", "kserve", "alibi"]
    probe = f"import importlib.util as u; print([m for m in {modules} if u.find_spec(m)])"
    serving = _in(images.serving, f'python3 -c "{probe}"')
    assert serving.stdout.strip() == "['kserve', 'alibi']", serving.stderr
    pipeline = _in(images.pipeline, f'python3 -c "{probe}"')
    assert pipeline.stdout.strip() == "['kfp', 'great_expectations', 'fairlearn']", pipeline.stderr


@pytest.mark.parametrize("name", NAMES)
def test_each_image_speaks_postgresql(images: Images, name: str) -> None:
    """The predictor, detector and feedback API (serving) and the monitoring pipeline's steps
    (pipeline) read and write the stores on PostgreSQL on a cluster: the driver is in both."""
    probe = "import sqlalchemy as sa; print(sa.create_engine('postgresql+psycopg://h/d').driver)"
    proc = _in(_ref(images, name), f'python3 -c "{probe}"')
    assert proc.stdout.strip() == "psycopg", proc.stderr


def test_the_serving_cli_starts_in_its_image(images: Images) -> None:
    proc = podman("run", "--rm", "--network", "none", "--read-only", images.serving, "--help",
                  check=False)  # fmt: skip
    assert proc.returncode == 0 and "serve-one" in proc.stdout, proc.stderr


def test_a_code_change_rebuilds_only_the_code_layers(images: Images, tmp_path: Path) -> None:
    """A copy of the tree with one code line changed, built with the same arguments: the base,
    the user and the dependency layer are the built image's own; only the code layers differ."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in files:
        if (ROOT / rel).is_file():
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, tmp_path / rel)
    change = f"# a code change {uuid.uuid4().hex}"  # new each run: an old build is no cache hit
    with (tmp_path / "hospital_mlops" / "paths.py").open("a") as fh:
        fh.write(change + "\n")
    tag = "localhost/hospital-mlops/serving:test-code-change"
    record = images.record
    args = ["build", "-f", "serving/Dockerfile", "--network", "host", "-t", tag,
            "--build-arg", f"BASE_IMAGE={record['base_image']}",
            "--build-arg", f"HMLOPS_GIT_SHA={record['git_sha']}",
            "--build-arg", f"HMLOPS_GIT_DIRTY={str(record['dirty']).lower()}"]  # fmt: skip
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.exists():
        args += ["--secret", f"id=build-ca,src={ca}"]
    try:
        proc = subprocess.run(
            ["podman", *args, str(tmp_path)],
            cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=900,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:]
        ran = _run_steps(proc.stdout)
        assert "--constraint requirements.lock --requirement requirements.in" not in ran, (
            "the dependency install ran again"
        )
        assert "uv build --wheel" in ran and "/tmp/dist/hospital_mlops" in ran, ran
        # and the image has the changed code (a mounted wheel once left the old code in it)
        site = "/opt/venv/lib/python3.11/site-packages"
        shown = _in(tag, f"tail -n 1 {site}/hospital_mlops/paths.py")
        assert shown.stdout.strip() == change

        def layers(ref: str) -> list[str]:
            out = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", ref).stdout
            return list(json.loads(out))

        before, after = layers(images.serving), layers(tag)
        assert len(before) == len(after) == 6
        assert before[:3] == after[:3]  # base, the user, the dependencies (1.7 GB)
        assert before[3] != after[3] and before[4] != after[4]  # the wheel and its install
    finally:
        podman("rmi", "--force", tag, check=False)


def _run_steps(log: str) -> str:
    """The build steps that actually ran (a cached step prints "Using cache" after its line)."""
    ran, lines = [], log.splitlines()
    for i, line in enumerate(lines):
        if "STEP" in line and " RUN " in line:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            if "Using cache" not in following:
                ran.append(line)
    return "\n".join(ran)
