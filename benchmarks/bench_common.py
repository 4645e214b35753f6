"""What every benchmark records beside its numbers, and how it saves them."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "processor": platform.machine(),
        "cpus": os.cpu_count(),
        # the development machine is shared: read the times against its load
        "load_average_1m": round(os.getloadavg()[0], 2),
    }


def percentiles_ms(seconds: list[float]) -> dict[str, float]:
    """p50, p90 and p99 of durations in seconds, in milliseconds."""
    ms = np.asarray(seconds) * 1e3
    return {f"p{q}_ms": round(float(np.percentile(ms, q)), 3) for q in (50, 90, 99)}


def command_line() -> str:
    """How this benchmark was started, as a reader would type it (``python benchmarks/…``)."""
    script = Path(sys.argv[0]).resolve()
    try:
        shown = script.relative_to(Path(__file__).resolve().parents[1])
    except ValueError:
        shown = script
    return shlex.join(["python", str(shown), *sys.argv[1:]])


def with_runs(report: dict[str, Any], path: Path, append: bool) -> dict[str, Any]:
    """What a results file holds: this run's fields at the top (what readers of the latest run
    read, unchanged) and, under ``runs``, every run the file keeps, oldest first, this one last.

    Without ``append`` the file keeps this run alone. With it (``--append``) the runs already in
    ``path`` are kept and this one is added: a range or an "N of N runs" quoted in the docs
    needs each of its runs saved. A file written before ``runs`` existed counts as one run.
    """
    run = {k: v for k, v in report.items() if k != "runs"}
    earlier: list[dict[str, Any]] = []
    if append and path.exists():
        saved = json.loads(path.read_text())
        earlier = saved.get("runs") or [{k: v for k, v in saved.items() if k != "runs"}]
    return {**run, "runs": [*earlier, run]}


def save_and_print(report: dict[str, Any], path: Path, append: bool | None = None) -> None:
    """Stamp the machine and the time, write ``path`` and print this run's JSON.

    ``append`` (True or False) gives the file a ``runs`` list (:func:`with_runs`); ``None``
    writes the report alone, as before, for benchmarks that keep one run."""
    report = {
        **report,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    saved = report if append is None else with_runs(report, path, append)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))
