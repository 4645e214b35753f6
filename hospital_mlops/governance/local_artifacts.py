"""The local registry's artifacts, readable wherever its directory is mounted, by a reader that
may not write it.

MLflow's SQLite store records every artifact location as an absolute ``file://`` URI under the
state directory it was written in (``<state>/mlartifacts/…``). A state directory restored
elsewhere, or mounted into a container at another path, then names artifacts that are not there.
And loading a registered model writes ``registered_model_meta`` into the directory it loads from,
so a reader that may only read the store (the serving image's uid 10001, a read-only mount)
could not load at all.

``RelocatableLocalArtifactRepository`` is MLflow's local repository with two changes, installed
for ``file`` URIs only while the registry is the local SQLite store (``use_for_local_store``):
- a location under ``<old>/mlartifacts/`` whose ``<old>/mlartifacts`` no longer exists is read
  (and written) under the current state directory's ``mlartifacts/``;
- a download without a destination is a copy in this process's temporary directory, never the
  store's own files, so nothing a reader does writes into the store.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hospital_mlops.quiet import before_mlflow

ARTIFACTS_DIR = "mlartifacts"
_state: dict[str, Path] = {}


def relocated(path: str, state: Path) -> str:
    """``path`` under the current state directory when it was recorded under another one that
    is gone; otherwise ``path`` as it is."""
    parts = Path(path).parts
    if ARTIFACTS_DIR not in parts:
        return path
    at = len(parts) - 1 - parts[::-1].index(ARTIFACTS_DIR)
    recorded_root = Path(*parts[: at + 1])
    current_root = state / ARTIFACTS_DIR
    if recorded_root == current_root or recorded_root.exists() or not current_root.exists():
        return path
    return str(current_root.joinpath(*parts[at + 1 :]))


def _download_dir() -> Path:
    if "downloads" not in _state:
        directory = Path(tempfile.mkdtemp(prefix="hmlops-artifacts-"))
        atexit.register(shutil.rmtree, directory, True)
        _state["downloads"] = directory
    return Path(tempfile.mkdtemp(dir=_state["downloads"]))


@functools.cache
def repository_class() -> type:
    """MLflow's local repository with the two changes above. Built on first use: MLflow is
    imported only once its telemetry is switched off (``quiet.before_mlflow``), never when this
    module is imported."""
    before_mlflow()
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    class RelocatableLocalArtifactRepository(LocalArtifactRepository):
        def __init__(self, artifact_uri: str, *args: Any, **kwargs: Any) -> None:
            super().__init__(artifact_uri, *args, **kwargs)
            state = _state.get("state")
            if state is not None:
                self._artifact_dir = relocated(str(self._artifact_dir), state)

        def download_artifacts(self, artifact_path: str, dst_path: str | None = None) -> str:
            return str(super().download_artifacts(artifact_path, dst_path or str(_download_dir())))

    return RelocatableLocalArtifactRepository


def use_for_local_store(state: Path) -> None:
    """Read (and write) the local store's artifacts through the relocatable repository."""
    before_mlflow()
    from mlflow.store.artifact.artifact_repository_registry import _artifact_repository_registry

    _state["state"] = state.resolve()
    _artifact_repository_registry.register("file", repository_class())
    _artifact_repository_registry.register("", repository_class())
