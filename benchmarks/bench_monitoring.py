"""Benchmark a monitoring run over 1,000,000 logged predictions with outcomes.

Builds (once, cached in a temporary directory) a prediction log of N predictions spread over
ten weekly windows, with calibrated simulated risks, and outcomes for 70% of them, through the
real tables (``prediction_log.predictions``, ``monitoring.outcomes``). Then times what
``hmlops monitor run`` does after resolving the registry baseline: read the predictions joined
to their outcomes, compute every window (KS score drift, realized AUROC with a 200-replicate
bootstrap CI, ECE, calibration table, CBPE estimate, alert volume) and the alerts. The registry
read is a constant few hundred ms and is left out; the baseline is simulated like the stream.

Target (monitoring issue): ≤ 60 s on 2 cores. Prints a table and saves
benchmarks/results/monitoring.json with the machine.

Usage: python benchmarks/bench_monitoring.py [--predictions 1000000] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from hospital_mlops.monitoring.breakdowns import breakdown_cells
from hospital_mlops.monitoring.outcomes import outcomes_table
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.monitoring.run import logged_predictions
from hospital_mlops.monitoring.windows import Baseline, alerts_for, compute_windows
from hospital_mlops.prediction_log import PredictionLog, predictions

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "monitoring.json"
TARGET_SECONDS = 60.0
WEEKS = 10
MODEL, VERSION = "readmission-30d", 1


def _risks(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.beta(1.6, 11.0, size=n), 0.005, 0.95)


def _inputs(rng: np.random.Generator, m: int) -> list[str]:
    """Requests of a real request's size and shape (a bundled example's fields), varied in the
    fields the break-downs read, so the JSON extraction is measured on realistic rows."""
    from hospital_mlops.example_requests import example_instances

    template = example_instances((80_000, 80_100), n=1, seed=0)[0]
    races = rng.choice(["Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"], m)
    sexes = rng.choice(["Female", "Male"], m)
    ages = rng.choice([f"[{d}-{d + 10})" for d in range(0, 100, 10)], m)
    sources = rng.choice([1, 2, 4, 6, 7, 17], m)
    return [
        json.dumps(
            template
            | {
                "race": str(races[i]),
                "gender": str(sexes[i]),
                "age": str(ages[i]),
                "admission_source_id": int(sources[i]),
            },
            sort_keys=True,
        )
        for i in range(m)
    ]


def build_log(url: str, n: int, seed: int = 0) -> None:
    log = PredictionLog(url)
    table = outcomes_table(log)
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 10**9
    chunk = 100_000
    with log.engine.begin() as conn:
        for offset in range(0, n, chunk):
            m = min(chunk, n - offset)
            risk = _risks(rng, m)
            seconds = start + rng.integers(0, WEEKS * 7 * 86400, size=m)
            when = pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
            tokens = [f"enc{offset + i:020d}" for i in range(m)]
            inputs = _inputs(rng, m)
            rows = [
                {
                    "prediction_id": f"00000000-0000-4000-8000-{offset + i:012d}",
                    "request_id": "bench",
                    "scored_at": when[i],
                    "protocol": "v1",
                    "model_name": MODEL,
                    "model_version": VERSION,
                    "model_sha256": "0" * 64,
                    "feature_set_version": "bench",
                    "features_sha256": "0" * 64,
                    "source": "bench",
                    "inputs": inputs[i],
                    "answer": "{}",
                    "encounter_token": tokens[i],
                    "risk": float(risk[i]),
                    "alert": bool(risk[i] >= 0.19),
                }
                for i in range(m)
            ]
            conn.execute(predictions.insert(), rows)
            known = rng.random(m) < 0.7
            outcome = rng.random(m) < risk
            conn.execute(
                table.insert(),
                [
                    {
                        "encounter_token": tokens[i],
                        "readmitted_30d": bool(outcome[i]),
                        "recorded_at": None,
                        "ingested_at": "2026-03-01T00:00:00Z",
                        "source_sha256": "0" * 64,
                    }
                    for i in np.flatnonzero(known)
                ],
            )
    log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", type=int, default=1_000_000)
    parser.add_argument(
        "--work", type=Path, default=Path(tempfile.gettempdir()) / "hmlops-bench-mon"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    path = args.work / f"log-v2-{args.predictions}.sqlite"
    url = f"sqlite:///{path}"
    if not path.exists():
        print(f"building a prediction log of {args.predictions:,} predictions in {path} …")
        started = time.perf_counter()
        build_log(url, args.predictions)
        print(f"  built in {time.perf_counter() - started:.0f} s")
    policy = load_monitoring_policy()
    rng = np.random.default_rng(1)
    base_risk = _risks(rng, 20_000)
    baseline = Baseline(
        MODEL, 0.72, 0.01, 1.0, 100 * float((base_risk >= 0.19).mean()), 0.12, base_risk
    )
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
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "predictions": len(frame),
        "with_outcomes": int(frame["outcome"].notna().sum()),
        "windows": len(windows),
        "alerts": len(alerts),
        "breakdown_cells": len(cells),
        "bootstrap_replicates": policy.bootstrap.replicates,
        "seconds": {k: round(v, 2) for k, v in timings.items()} | {"total": round(total, 2)},
        "target_seconds": TARGET_SECONDS,
        "meets_target": total <= TARGET_SECONDS,
    }
    print(
        f"\nmonitor run over {len(frame):,} predictions ({result['with_outcomes']:,} with "
        f"outcomes), {len(windows)} windows, {len(alerts)} alerts"
    )
    for key, value in result["seconds"].items():
        print(f"  {key:<36}{value:>8.2f}")
    print(f"  target ≤ {TARGET_SECONDS:.0f} s: {'met' if result['meets_target'] else 'NOT met'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
