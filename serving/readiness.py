"""Waiting for a server process to answer: one loop for the local stack's helpers."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


class NotReady(RuntimeError):
    pass


def wait_until_ready(
    url: str,
    process: subprocess.Popen[bytes],
    log_file: Path,
    timeout: float = 240.0,
    interval: float = 0.3,
) -> None:
    """Until ``url`` answers 200; NotReady (pointing at ``log_file``) if the process exits or
    ``timeout`` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise NotReady(f"the server exited ({process.returncode}); see {log_file}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise NotReady(f"the server was not ready within {timeout:.0f} s; see {log_file}")
        time.sleep(interval)
