"""The pipeline image's Dockerfile: hadolint-clean, non-root, and carries what lineage needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "components" / "Dockerfile"


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else (shutil.which("hadolint") or "hadolint")


def test_hadolint_is_clean() -> None:
    proc = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_runs_as_non_root_with_code_version_and_no_telemetry() -> None:
    text = DOCKERFILE.read_text()
    assert "USER 10001" in text
    for var in (
        "HMLOPS_GIT_SHA",
        "HMLOPS_GIT_DIRTY",
        "HMLOPS_HOME",
        "MLFLOW_DISABLE_TELEMETRY",
        "GX_ANALYTICS_ENABLED",
    ):
        assert var in text
    assert "--constraint requirements.lock" in text
    for path in ("hospital_mlops", "components", "pipelines", "config", "data"):
        assert f"COPY {path} " in text and (ROOT / path).exists()
