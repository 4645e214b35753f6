"""Benchmark a monitoring run over a prediction log of millions of predictions with outcomes.

Builds (once, kept in the work directory) a prediction log of N predictions over ten weekly
windows with outcomes for 70% of them (benchmarks/monitoring_log.py), on SQLite (default, 1M)
or on a real PostgreSQL server (``--backend postgresql``, 10M; e2e/local_postgres.py, data kept
in the work directory). Then times what ``hmlops monitor run`` does after resolving the registry
baseline: read the predictions joined to their outcomes with the break-down fields, compute
every window (KS score drift, realized AUROC with a 200-replicate bootstrap CI, ECE,
calibration table, CBPE estimate, alert volume), the alerts and the break-downs. The registry
read is a constant few hundred ms and is left out; the baseline is simulated like the stream.

``--cold`` (PostgreSQL) restarts the server and empties the kernel's page cache between the
build and the measurement, so the read starts from the disk.

Targets (monitoring issue): SQLite 1M ≤ 60 s, PostgreSQL 10M ≤ 120 s, on 2 cores. Prints a
table and saves benchmarks/results/monitoring.json (PostgreSQL: monitoring_postgres.json, cold
monitoring_postgres_cold.json) with the machine.

Usage: python benchmarks/bench_monitoring.py [--backend sqlite|postgresql] [--cold]
       [--predictions N] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from bench_postgres import bench_server, drop_os_caches, has_database
from monitoring_log import MODEL, VERSION, build_log, risks

from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.monitoring.alerts import alerts_for
from hospital_mlops.monitoring.breakdowns import breakdown_cells
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.monitoring.run import logged_predictions
from hospital_mlops.monitoring.windows import Baseline, compute_windows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = {
    "sqlite": ROOT / "benchmarks" / "results" / "monitoring.json",
    "postgresql": ROOT / "benchmarks" / "results" / "monitoring_postgres.json",
}
TARGET_SECONDS = {"sqlite": 60.0, "postgresql": 120.0}
DEFAULT_PREDICTIONS = {"sqlite": 1_000_000, "postgresql": 10_000_000}
LOG_VERSION = 3  # bump when monitoring_log writes different rows: a kept log is rebuilt


def _built(what: str, build: Any) -> None:
    print(f"building {what} …", flush=True)
    started = time.perf_counter()
    build()
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)


@contextlib.contextmanager
def prepared_log(args: argparse.Namespace) -> Iterator[tuple[str, dict[str, Any]]]:
    """The store's URL, built if missing, and what was done to make the measurement cold."""
    n = args.predictions
    if args.backend == "sqlite":
        path = args.work / f"log-v{LOG_VERSION}-{n}.sqlite"
        url = f"sqlite:///{path}"
        if not path.exists():
            _built(f"a prediction log of {n:,} predictions in {path}", lambda: build_log(url, n))
        yield url, {}
        return
    name = f"log_v{LOG_VERSION}_{n}"
    done = args.work / f"{name}.built"  # a build cut short leaves a database without this
    with bench_server(args.work) as server:
        url = server.url(name)
        if not done.exists():
            if has_database(server, name):
                server.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            server.execute(f'CREATE DATABASE "{name}"')
            _built(f"a prediction log of {n:,} predictions in PostgreSQL ({name})",
                   lambda: build_log(url, n))  # fmt: skip
            done.touch()
        if args.build_only:
            yield url, {}
            return
        cold: dict[str, Any] = {}
        if args.cold:
            server.stop()
            cold["os_page_cache_dropped"] = drop_os_caches()
            server.start()
            cold["server_restarted"] = True
        yield url, cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--predictions", type=int)
    parser.add_argument("--cold", action="store_true", help="PostgreSQL: restart, drop caches")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "hmlops-bench-mon"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.cold and args.backend != "postgresql":
        parser.error("--cold is for --backend postgresql")
    args.predictions = args.predictions or DEFAULT_PREDICTIONS[args.backend]
    args.out = args.out or RESULTS[args.backend]
    if args.cold and args.out == RESULTS["postgresql"]:  # a warm run's file stays
        args.out = args.out.with_name("monitoring_postgres_cold.json")
    args.work.mkdir(parents=True, exist_ok=True)
    policy = load_monitoring_policy()
    base_risk = risks(np.random.default_rng(1), 20_000)
    baseline = Baseline(
        MODEL, 0.72, 0.01, 1.0, 100 * float((base_risk >= 0.19).mean()), 0.12, base_risk
    )
    with prepared_log(args) as (url, cold):
        if args.build_only:
            return
        log = PredictionLog(url)
        timings: dict[str, float] = {}
        started = time.perf_counter()
        frame = logged_predictions(log, MODEL, VERSION, policy.breakdowns.by)
        timings["read_predictions_outcomes_and_groups_s"] = time.perf_counter() - started
        mark = time.perf_counter()
        windows = compute_windows(frame, baseline, policy)
        timings["windows_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        alerts = alerts_for(windows, baseline, policy)
        timings["alerts_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        cells = breakdown_cells(frame, policy)
        timings["breakdowns_s"] = time.perf_counter() - mark
        total = time.perf_counter() - started
        log.close()
    target = TARGET_SECONDS[args.backend]
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            # the machine is shared: read the times against its load
            "load_average_1m_after": round(os.getloadavg()[0], 2),
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "backend": args.backend,
        "command": "python benchmarks/bench_monitoring.py --backend "
        f"{args.backend}{' --cold' if args.cold else ''} --predictions {args.predictions}",
        **({"cold": cold} if args.backend == "postgresql" else {}),
        "predictions": len(frame),
        "with_outcomes": int(frame["outcome"].notna().sum()),
        "windows": len(windows),
        "alerts": len(alerts),
        "breakdown_cells": len(cells),
        "bootstrap_replicates": policy.bootstrap.replicates,
        "seconds": {k: round(v, 2) for k, v in timings.items()} | {"total": round(total, 2)},
        "target_seconds": target,
        "meets_target": total <= target,
    }
    print(
        f"\nmonitor run over {len(frame):,} predictions ({result['with_outcomes']:,} with "
        f"outcomes) on {args.backend}, {len(windows)} windows, {len(alerts)} alerts"
    )
    for key, value in result["seconds"].items():
        print(f"  {key:<36}{value:>8.2f}")
    print(f"  target ≤ {target:.0f} s: {'met' if result['meets_target'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
