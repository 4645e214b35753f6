"""Integration fixtures: one real diabetes130 pipeline run through kfp.local, shared by the
pipeline, registry and serving tests (it is the slowest thing the suite does)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_KEY

HMLOPS = [sys.executable, "-m", "hospital_mlops.cli"]
REVIEW_ROLES = ("clinical", "technical", "privacy", "compliance")


def evidence_path(summary: dict, name: str) -> str:
    return next(e["path"] for e in summary["evidence"] if e["name"] == name)


def artifact_sha(summary: dict, name: str) -> str:
    return next(a["sha256"] for a in summary["artifacts"] if a["name"] == name)


def free_port_base(span: int = 3) -> int:
    """The first of ``span`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base = int(sock.getsockname()[1])
        if base + span < 65_000 and all(_port_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range")


def quiet_port_base(span: int) -> int:
    """The first of ``span`` free ports below Linux's ephemeral range (32768–60999), for a
    process that binds them minutes after they were chosen (the demo binds after its
    pipeline): bind(0) and outgoing connections elsewhere in the suite never take these."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20_000, 32_000 - span)
        if all(_port_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range below the ephemeral range")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def hmlops(*args: str, key: str | None = TEST_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HMLOPS_HMAC_KEY",)}
    if key:
        env["HMLOPS_HMAC_KEY"] = key
    return subprocess.run([*HMLOPS, *args], capture_output=True, text=True, env=env, timeout=900)


def hmlops_here(*args: str) -> subprocess.CompletedProcess[str]:
    """``hmlops`` in this process (``cli.run_captured``): the same ``main`` the console script
    runs, without paying the interpreter's and MLflow's start-up per call (for tests that make
    many calls; the subprocess form above is what the CLI tests of each command use)."""
    from hospital_mlops.cli.main import run_captured

    code, out, err = run_captured(args)
    return subprocess.CompletedProcess(["hmlops", *args], code, out, err)


def run_json(*args: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    proc = hmlops("pipeline", "run", "--json", *args)
    return json.loads(proc.stdout), proc


@pytest.fixture(scope="session")
def d130_runs(tmp_path_factory: pytest.TempPathFactory):
    """The full pipeline once through kfp.local, then the model steps again in process on the
    snapshot it published (a second registered version, for determinism and compare). The
    data layers' determinism is checked on both sources in test_scenarios."""
    from hospital_mlops.steps.data import RunContext, model_summary
    from hospital_mlops.steps.model import run_model_in_process

    out = tmp_path_factory.mktemp("d130_store")
    first, proc = run_json("--source", "diabetes130", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    published = Path(
        next(a["path"] for a in first["artifacts"] if a["name"] == "published_features")
    )
    ctx = RunContext("diabetes130", "readmission_risk_model", out, "rerun-of-the-model-steps")
    run_model_in_process(ctx, published, tmp_path_factory.mktemp("d130_rerun"))
    second = {"run_id": ctx.run_id, **model_summary(ctx)}
    return out, first, second, proc, None


@pytest.fixture(scope="session")
def d130_signed_off(d130_runs) -> int:
    """The first run's version, signed off by test reviewers."""
    from hospital_mlops.governance import registration

    _, first, _, _, _ = d130_runs
    version = int(first["model"]["version"])
    # In process: the sign-off and promote commands themselves are tested in test_pipeline_kfp.
    for role in REVIEW_ROLES:
        registration.sign_off("readmission-30d", version, role, f"Test {role} reviewer")
    return version


@pytest.fixture(scope="module")
def d130_champion(d130_signed_off) -> int:
    """The first run's version promoted to @champion, at the start of each module that uses it:
    test_pipeline_kfp promotes the rerun's version in between, whatever the module order."""
    from hospital_mlops.governance import registration

    registration.promote("readmission-30d", d130_signed_off, "champion", REVIEW_ROLES)
    return d130_signed_off
