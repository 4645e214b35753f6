"""Both Dockerfiles, read: hadolint-clean, non-root, a dependency layer that code changes do not
invalidate, and what lineage and the pods need. The images themselves are built and run by the
container suite (tests/containers, make test-containers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = {
    "pipeline": ROOT / "components" / "Dockerfile",
    "serving": ROOT / "serving" / "Dockerfile",
}
EXTRAS = {"pipeline": "pipeline", "serving": "serving"}
UPSTREAM_BASE = "python:3.11.7-slim-bookworm"


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else (shutil.which("hadolint") or "hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        keyword, _, rest = pending.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def stages(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, keyed by the stage's name (the last one: "final")."""
    named: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else "final"
            current = named.setdefault(name, [])
        current.append((keyword, rest))
    return named


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_hadolint_is_clean(image: str) -> None:
    proc = subprocess.run([_hadolint(), str(DOCKERFILES[image])], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_the_base_is_the_pinned_upstream_unless_a_local_one_is_given(image: str) -> None:
    first = instructions(DOCKERFILES[image])[0]
    assert first == ("ARG", f"BASE_IMAGE={UPSTREAM_BASE}")
    froms = [rest for keyword, rest in instructions(DOCKERFILES[image]) if keyword == "FROM"]
    assert froms[0] == "${BASE_IMAGE} AS deps" and froms[-1] == "${BASE_IMAGE}"


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_dependencies_are_a_layer_that_code_changes_do_not_invalidate(image: str) -> None:
    deps = stages(DOCKERFILES[image])["deps"]
    copies = [rest for keyword, rest in deps if keyword == "COPY"]
    assert copies == ["containers/requirements_for.py requirements.lock pyproject.toml ./"]
    [install] = [rest for keyword, rest in deps if keyword == "RUN"]
    assert f"requirements_for.py pyproject.toml {EXTRAS[image]} > requirements.in" in install
    assert "--constraint requirements.lock --requirement requirements.in" in install
    final = stages(DOCKERFILES[image])["final"]
    steps = [f"{k} {r}" for k, r in final]
    venv = steps.index("COPY --from=deps /opt/venv /opt/venv")
    code = next(i for i, s in enumerate(steps) if "from=wheel" in s)
    sha = next(i for i, s in enumerate(steps) if s.startswith("ARG HMLOPS_GIT_SHA"))
    assert venv < code < sha  # a new commit rebuilds neither the venv nor the code layer
    assert all("/opt/build-tools" not in s for s in steps if s.startswith("COPY"))  # no uv, pip


@pytest.mark.parametrize("image", list(DOCKERFILES))
def test_runs_as_uid_10001_with_its_code_version_labels_and_no_telemetry(image: str) -> None:
    final = stages(DOCKERFILES[image])["final"]
    text = DOCKERFILES[image].read_text()
    assert final[-1][0] in {"CMD", "ENTRYPOINT"}
    assert ("USER", "10001:10001") in final
    assert "useradd --system --uid 10001" in text
    for var in ("HMLOPS_GIT_SHA", "HMLOPS_GIT_DIRTY", "HMLOPS_HOME", "MLFLOW_DISABLE_TELEMETRY"):
        assert var in text
    labels = " ".join(rest for keyword, rest in final if keyword == "LABEL")
    for label in ("source", "revision", "licenses", "title", "version"):
        assert f"org.opencontainers.image.{label}=" in labels
    assert 'org.opencontainers.image.revision="${HMLOPS_GIT_SHA}"' in labels


def test_the_pipeline_image_carries_the_config_and_data_the_steps_read() -> None:
    final = stages(DOCKERFILES["pipeline"])["final"]
    assert ("COPY", "config ./config") in final and ("COPY", "data ./data") in final
    assert "GX_ANALYTICS_ENABLED=false" in DOCKERFILES["pipeline"].read_text()
    wheel = stages(DOCKERFILES["pipeline"])["wheel"]
    for path in ("hospital_mlops", "components", "pipelines", "serving"):
        assert ("COPY", f"{path} ./{path}") in wheel and (ROOT / path).exists()


def test_the_build_context_leaves_out_venvs_state_and_local_outputs() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", ".venv-*", ".hmlops", "out", ".numba-cache"} <= ignored
    for needed in ("hospital_mlops", "config", "data", "requirements.lock", "containers"):
        assert needed not in ignored
