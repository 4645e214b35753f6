"""What every benchmark records beside its numbers, and how it saves them."""

from __future__ import annotations

import json
import os
import platform
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


def save_and_print(report: dict[str, Any], path: Path) -> None:
    """Stamp the machine and the time, write ``path`` and print the same JSON."""
    report = {
        **report,
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    text = json.dumps(report, indent=2, sort_keys=True) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text, end="")
