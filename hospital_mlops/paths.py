"""Where the project's bundled files live: the repo locally, ``HMLOPS_HOME`` in an image."""

from __future__ import annotations

import os
import sys
import tempfile
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


_FALLBACK_SAID: set[Path] = set()


def writable_state_dir() -> Path:
    """Where a server writes its local state when no URL names a store (the prediction log, the
    drift results, the access audit): the state directory, or, where this process may only read
    it (a registry mounted read-only into a container, or owned by another user), a directory
    under the temporary directory, said once on stderr because what is written there is gone
    with the container. The pods never rely on this: their stores are named by Secrets."""
    state = state_dir()
    try:
        state.mkdir(parents=True, exist_ok=True)
        if os.access(state, os.W_OK | os.X_OK):
            return state
    except OSError:
        pass
    fallback = Path(tempfile.gettempdir()) / "hmlops-state"
    fallback.mkdir(parents=True, exist_ok=True)
    if state not in _FALLBACK_SAID:
        _FALLBACK_SAID.add(state)
        print(
            f"hmlops: warning: the state directory {state} is read-only for this process; local "
            f"logs go to {fallback}, which is lost with the container (set "
            "HMLOPS_PREDICTION_LOG_URL, HMLOPS_DRIFT_DB_URL and HMLOPS_ACCESS_LOG to keep them)",
            file=sys.stderr,
            flush=True,
        )
    return fallback
