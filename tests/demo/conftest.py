"""The demo suite (`make test-demo`, part of `make test-cluster`): `make demo` run once, as a
fresh machine runs it (no HMAC key set, an empty state directory), at the story's quick pace,
with every Python process of the run under the egress guard. Its tests check what it shows and
what it must never do (test_guarded_demo.py), and open every page it wrote in a real browser
(test_pages_in_a_browser.py). It is the slowest run of the project, so it runs once, here, and
not in `make test`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hospital_mlops.security.egress_guard import guard_env
from tests.integration.conftest import HMLOPS, quiet_port_base

Demo = tuple[Path, subprocess.CompletedProcess[str], Path, dict[str, str]]


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """(its home, the finished process, the egress guard's log, its environment)."""
    home = tmp_path_factory.mktemp("guarded-demo")
    # a fresh machine: none of the suite's settings (its key, its registry, its log URLs)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMLOPS_")}
    env["HMLOPS_STATE_DIR"] = str(home / "state")
    log = home / "egress.jsonl"
    port = quiet_port_base(5)  # bound minutes later, after the pipeline
    proc = subprocess.run(
        [*HMLOPS, "demo", "--out", str(home / "out"), "--port-base", str(port),
         "--story-pace", "quick"],
        cwd=home, env=guard_env(log, env), capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return home, proc, log, env
