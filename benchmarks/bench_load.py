"""Sustained load on the local predictor: a paced rate at fixed concurrency for minutes, with
errors, latency and the server's memory over time (a leak shows as RSS that keeps growing).

Starts the real predictor (``hmlops serve-one predictor``, prediction log and all) on
127.0.0.1 and drives it with single-encounter v1 requests (real test-period encounters, cycled)
from ``--concurrency`` keep-alive connections, paced to ``--rate`` requests per second. After
``--warm-up`` seconds it counts every answer for ``--seconds`` and samples the RSS of the
predictor and its prediction-log writer every 5 s.

Latency is measured from each request's *scheduled* send time, not from when it was actually
sent: a worker held up by a slow answer sends its next request late, and timing from the late
send would hide that wait (coordinated omission). ``p50_ms``…``max_ms`` are from the schedule;
``service_*`` are from the actual send (the server's own time plus the network), for comparison.

Targets (security and reliability issue): at least 200 requests/s for 5 minutes at concurrency 8
on 2 cores, zero errors, p99 reported, RSS growth under 5% after warm-up. Prints and saves
benchmarks/results/load.json.

Usage: python benchmarks/bench_load.py --state DIR [--rate 200] [--seconds 300]
``--state`` is a state directory with a registered champion (e.g. the one ``make demo`` made).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from bench_common import save_and_print

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "load.json"
TARGET_RATE = 200.0
TARGET_RSS_GROWTH = 0.05
SAMPLE_EVERY = 5.0


def _rss_mb(pid: int) -> float:
    """The process's resident memory and its children's (the prediction-log writer)."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):  # a child that just exited
            total += child.memory_info().rss
    return total / 1e6


async def _drive(
    url: str, bodies: list[dict[str, Any]], rate: float, concurrency: int, warm_up: float,
    seconds: float, pid: int,
) -> dict[str, Any]:  # fmt: skip
    latencies: list[float] = []  # from the scheduled send: what a caller on schedule waits
    service: list[float] = []  # from the actual send
    errors: dict[str, int] = {}
    rss: list[tuple[float, float]] = []
    start = time.perf_counter()
    measure_from, end = start + warm_up, start + warm_up + seconds
    interval = concurrency / rate  # each worker's pace: together they make ``rate``

    async def worker(n: int, client: httpx.AsyncClient) -> None:
        due = start + n * interval / concurrency
        i = n
        while due < end:
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent = time.perf_counter()
            try:
                answer = await client.post(url, json=bodies[i % len(bodies)])
                if answer.status_code != 200:
                    errors[str(answer.status_code)] = errors.get(str(answer.status_code), 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if due >= measure_from:
                done = time.perf_counter()
                latencies.append((done - due) * 1000)
                service.append((done - sent) * 1000)
            i += concurrency
            due += interval

    async def sampler() -> None:
        while time.perf_counter() < end:
            if time.perf_counter() >= measure_from:
                rss.append((time.perf_counter() - measure_from, _rss_mb(pid)))
            await asyncio.sleep(SAMPLE_EVERY)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        await asyncio.gather(sampler(), *(worker(n, client) for n in range(concurrency)))
    measured = time.perf_counter() - measure_from
    a = np.asarray(latencies)
    b = np.asarray(service)
    first = float(np.median([m for _, m in rss[:3]]))
    last = float(np.median([m for _, m in rss[-3:]]))
    return {
        "requests": len(latencies),
        "achieved_rate_per_s": round(len(latencies) / min(measured, seconds), 1),
        "errors": errors,
        "p50_ms": round(float(np.percentile(a, 50)), 2),
        "p95_ms": round(float(np.percentile(a, 95)), 2),
        "p99_ms": round(float(np.percentile(a, 99)), 2),
        "max_ms": round(float(a.max()), 2),
        "latency_measured_from": "the scheduled send time (corrected for coordinated omission)",
        "service_p50_ms": round(float(np.percentile(b, 50)), 2),
        "service_p99_ms": round(float(np.percentile(b, 99)), 2),
        "service_max_ms": round(float(b.max()), 2),
        "sent_late_by_more_than_10_ms": int(np.sum(a - b > 10)),
        "rss_mb_after_warm_up": round(first, 1),
        "rss_mb_at_end": round(last, 1),
        "rss_growth": round((last - first) / first, 4),
        "rss_samples": [[round(t, 1), round(m, 1)] for t, m in rss],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=TARGET_RATE)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--warm-up", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=18960)
    args = parser.parse_args()

    os.environ["HMLOPS_STATE_DIR"] = str(args.state)
    from hospital_mlops.inference.registered_examples import registered_examples
    from serving.readiness import wait_until_ready

    logs = Path(args.state) / "bench-load"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(
        os.environ,
        MLFLOW_DISABLE_TELEMETRY="true",
        HMLOPS_PREDICTION_LOG_URL=f"sqlite:///{logs / 'predictions.sqlite'}",
    )
    argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
            "--port", str(args.port)]  # fmt: skip
    with (logs / "predictor.log").open("wb") as sink:
        server = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink)
    try:
        base = f"http://127.0.0.1:{args.port}"
        wait_until_ready(f"{base}/v2/health/ready", server, logs / "predictor.log")
        bodies = [
            {"instances": [e]} for e in registered_examples("readmission-30d", "champion", 200)
        ]
        url = f"{base}/v1/models/readmission:predict"
        result = asyncio.run(
            _drive(url, bodies, args.rate, args.concurrency, args.warm_up, args.seconds, server.pid)
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
    report = {
        "target_rate_per_s": args.rate,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "warm_up_s": args.warm_up,
        **result,
        "meets_target": (
            not result["errors"]
            and result["achieved_rate_per_s"] >= TARGET_RATE * 0.99
            and result["rss_growth"] < TARGET_RSS_GROWTH
        ),
    }
    save_and_print(report, RESULTS)


if __name__ == "__main__":
    main()
