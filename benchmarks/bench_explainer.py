"""Benchmark the explainer as it is served: a live predictor and explainer on 127.0.0.1, each a
real KServe ModelServer started with `hmlops serve-one`, the explainer calling the predictor over
HTTP through `--predictor-host`.

Prints and saves (benchmarks/results/explainer.json):
- clinician view: p50 / p95 / p99 end-to-end latency over ≥ 300 sequential one-encounter
  requests (target p99 ≤ 50 ms), and the predictor's own latency for the same requests, so the
  explainer's share is visible;
- technical view (KernelSHAP with the configured nsamples and background): p50 per encounter
  (informational) and how many predictor rows one explanation costs;
- stability of the clinician's top-3 reasons under clinically meaningless changes
  (hospital_mlops.model.explain_stability), through the live explainer, on real test-period
  encounters.

Encounters are real test-period encounters of the served model (its training record's split) from
the bundled extract. The registry is the one HMLOPS_STATE_DIR / MLFLOW_TRACKING_URI points at.

Usage: python benchmarks/bench_explainer.py [--model readmission-30d@champion] [--requests 300]
       [--technical 5] [--stability 300]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hospital_mlops.model.explain_stability import measure_stability  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "explainer.json"
MODEL_NAME = "readmission"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_one(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "hospital_mlops.cli", "serve-one", *args],
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _wait_ready(
    port: int, process: subprocess.Popen[bytes], log: Path, started: float, timeout: float
) -> float:
    """Seconds from ``started`` (the launch) until the server reports ready."""
    from serving.readiness import NotReady, wait_until_ready

    remaining = max(timeout - (time.monotonic() - started), 1.0)
    url = f"http://127.0.0.1:{port}/v2/health/ready"
    try:
        wait_until_ready(url, process, log, timeout=remaining, interval=0.2)
    except NotReady as exc:
        sys.exit(f"server on {port}: {exc}:\n{log.read_text()[-3000:]}")
    return time.monotonic() - started


def _percentiles(ms: list[float]) -> dict[str, float]:
    values = np.asarray(ms)
    return {
        "n": len(ms),
        "p50_ms": round(float(np.percentile(values, 50)), 1),
        "p95_ms": round(float(np.percentile(values, 95)), 1),
        "p99_ms": round(float(np.percentile(values, 99)), 1),
        "max_ms": round(float(values.max()), 1),
    }


def _timed_posts(
    client: httpx.Client, url: str, bodies: list[dict[str, Any]]
) -> tuple[list[float], list[dict[str, Any]]]:
    times, answers = [], []
    for body in bodies:
        started = time.perf_counter()
        response = client.post(url, json=body)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            sys.exit(f"{url} answered {response.status_code}: {response.text[:500]}")
        answers.append(response.json())
    return times, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="readmission-30d@champion")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--technical", type=int, default=5)
    parser.add_argument("--stability", type=int, default=300)
    parser.add_argument("--note", default="", help="recorded with the results (e.g. the setup)")
    args = parser.parse_args()

    from hospital_mlops.features.diabetes130_stream import example_instances
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.config import load_serving_config
    from hospital_mlops.model.example_requests import test_period

    load_at_start = round(os.getloadavg()[0], 2)
    name, _, ref = args.model.partition("@")
    training = registry.load_risk_model(name, ref).training
    period = test_period(training)
    encounters = example_instances(period, n=max(args.requests, args.stability), seed=11)
    config = load_serving_config()

    logs = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-explainer-{os.getpid()}"
    logs.mkdir(parents=True, exist_ok=True)
    p_port, e_port = _free_port(), _free_port()
    launched = time.monotonic()
    processes = [
        _serve_one(
            ["predictor", "--model", args.model, "--port", str(p_port)], logs / "predictor.log"
        ),
        _serve_one(
            ["explainer", "--port", str(e_port), "--predictor-host", f"127.0.0.1:{p_port}"],
            logs / "explainer.log",
        ),
    ]
    try:
        # Both launched together; each is timed from the launch to its own readiness.
        explainer_s = _wait_ready(e_port, processes[1], logs / "explainer.log", launched, 300)
        predictor_s = _wait_ready(p_port, processes[0], logs / "predictor.log", launched, 300)
        startup = {"predictor_s": round(predictor_s, 1), "explainer_s": round(explainer_s, 1)}
        predict = f"http://127.0.0.1:{p_port}/v1/models/{MODEL_NAME}:predict"
        explain = f"http://127.0.0.1:{e_port}/v1/models/{MODEL_NAME}:explain"
        one_each = [{"instances": [e]} for e in encounters[: args.requests]]
        with httpx.Client(timeout=600) as client:
            _timed_posts(client, explain, one_each[:20])  # warm-up: connections, caches
            _timed_posts(client, predict, one_each[:20])
            clinician_ms, _ = _timed_posts(client, explain, one_each)
            predictor_ms, _ = _timed_posts(client, predict, one_each)
            technical_bodies = [{**b, "view": "technical"} for b in one_each[: args.technical]]
            _timed_posts(client, explain, technical_bodies[:1])  # fits KernelSHAP once
            technical_ms, technical = _timed_posts(client, explain, technical_bodies)

            def reasons_of(instances: list[dict[str, Any]]) -> list[list[str]]:
                out: list[list[str]] = []
                batch = config.limits.max_instances
                for start in range(0, len(instances), batch):
                    body = {"instances": instances[start : start + batch]}
                    response = client.post(explain, json=body)
                    response.raise_for_status()
                    out += [
                        [r["feature"] for r in e["reasons"]]
                        for e in response.json()["explanations"]
                    ]
                return out

            stability = measure_stability(encounters[: args.stability], reasons_of)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)

    kernel = technical[0]["explanations"][0]["kernel_shap"]
    additivity = max(
        abs(
            t["explanations"][0]["kernel_shap"]["base_value"]
            + sum(a["attribution"] for a in t["explanations"][0]["kernel_shap"]["attributions"])
            - t["explanations"][0]["risk"]
        )
        for t in technical
    )
    clinician = _percentiles(clinician_ms)
    result = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # other work on the machine inflates tail latency: recorded, not hidden
            "load_average_1m_at_start": load_at_start,
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
        "model": args.model,
        "model_version": technical[0]["explanations"][0]["model_version"],
        "note": args.note,
        "encounters": f"real test-period encounters (order {period[0]}–{period[1]})",
        "startup": startup,
        "clinician_view": {
            **clinician,
            "target_p99_ms": 50,
            "meets_target": clinician["p99_ms"] <= 50,
        },
        "predictor_alone": _percentiles(predictor_ms),
        "technical_view": {
            **_percentiles(technical_ms),
            "nsamples": kernel["nsamples"],
            "background_rows": kernel["background"]["rows"],
            "max_additivity_error": additivity,
        },
        "stability": {
            **stability.as_dict(),
            "target": 0.8,
            "meets_target": stability.mean_overlap >= 0.8,
        },
        "config": config.explainer.model_dump(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
