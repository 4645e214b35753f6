"""Where the project's bundled files live: the repo locally, ``HMLOPS_HOME`` in an image."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    home = os.environ.get("HMLOPS_HOME")
    return Path(home) if home else Path(__file__).resolve().parent.parent


def config_path(name: str) -> Path:
    return project_root() / "config" / name


def state_dir() -> Path:
    """Local state (the SQLite model registry and its artifacts) unless configured otherwise."""
    configured = os.environ.get("HMLOPS_STATE_DIR")
    return Path(configured) if configured else project_root() / ".hmlops"
