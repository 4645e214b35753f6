"""Benchmark the predictor in its container against the same predictor as a host process.

Two servers of the same registered champion, side by side on 127.0.0.1:

- host: ``hmlops serve-one predictor`` from the venv, with the manifest's plain environment
  (licence profile, access log to stdout) and its own SQLite prediction log;
- container: the serving image (``out/images.json``), run as the production overlay declares
  the InferenceService's predictor (``kubectl kustomize`` →
  ``hospital_mlops.deploy.manifest_podman_run``:
  the command, the read-only root with its /tmp tmpfs, no capabilities, no-new-privileges, the
  CPU and memory limits, the environment with test Secret values), its 8080 published on
  127.0.0.1 through podman's bridge. The registry is a copy of the benchmark registry owned by
  the image's uid, mounted at the registry's own path (MLflow records absolute artifact paths).

Both get the same single-row v1 predict bodies as benchmarks/bench_serving.py (real
test-period encounters), timed with its client (``_load_serial``: concurrency 1, one keep-alive
``http.client`` connection) after a warm-up, in rounds that alternate between the two servers so
a busy neighbour slows both alike. Prints a table and saves
benchmarks/results/serving_container.json with the command line, the times and the machine.

Target: container p50 and p99 ≤ 1.1 × the host's.

Usage: python benchmarks/bench_serving_container.py [--state DIR] [--requests 2000]
       [--image REF] [--out FILE]
Without --state, bench_serving.py's benchmark registry is used (built once with ``hmlops demo``,
about 2 minutes, when it is not there).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_serving as bs
import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "serving_container.json"
IMAGES_JSON = ROOT / "out" / "images.json"
OVERLAY = ROOT / "kustomize" / "overlays" / "production"
CONTAINERS_CONF = ROOT / "containers" / "containers.conf"
UID = 10001
HOST, CONTAINER = "host", "container"
TARGET_RATIO = 1.1
READY_TIMEOUT = 300.0


def _relative(path: Path) -> str:
    """The interpreter as typed from the repository root (.venv/bin/python), else its path."""
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise SystemExit(f"podman {' '.join(args[:3])} … failed: {proc.stderr[-2000:]}")
    return proc


def _serving_image(explicit: str | None) -> str:
    if explicit:
        return explicit
    if not IMAGES_JSON.exists():
        raise SystemExit(f"no {IMAGES_JSON}: build the images first (make images) or pass --image")
    entry = json.loads(IMAGES_JSON.read_text())["images"]["serving"]
    found = _podman("image", "inspect", "--format", "{{.Id}}", entry["ref"], check=False)
    if found.returncode != 0 or found.stdout.strip() != entry["id"]:
        raise SystemExit(f"{entry['ref']} is not the image {IMAGES_JSON} records: rebuild it")
    return str(entry["digest_ref"] or entry["ref"])


def _predictor_source() -> Any:
    from hospital_mlops.deploy import overlay as deploy
    from hospital_mlops.deploy.manifest_pods import inference_service_pod

    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl (with its built-in kustomize) is needed to render the overlay")
    proc = subprocess.run(
        [kubectl, "kustomize", str(OVERLAY)], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        raise SystemExit(f"kubectl kustomize {OVERLAY} failed: {proc.stderr[-2000:]}")
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    (isvc,) = [
        d
        for d in docs
        if d["kind"] == "InferenceService" and d["metadata"]["name"] == deploy.SERVICE
    ]
    return inference_service_pod(isvc, "predictor")


def _registry_copy(state: Path, work: Path) -> Path:
    """mlflow.db (SQLite's backup API) and mlartifacts, owned by the image's uid."""
    copy = work / "registry"
    copy.mkdir()
    source, target = sqlite3.connect(state / "mlflow.db"), sqlite3.connect(copy / "mlflow.db")
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()
    shutil.copytree(state / "mlartifacts", copy / "mlartifacts")
    for path in [copy, *copy.rglob("*")]:
        os.chown(path, UID, UID)
    return copy


def _wait_container(name: str, url: str) -> float:
    started = time.monotonic()
    while True:
        status = _podman("inspect", "--format", "{{.State.Status}}", name, check=False)
        if status.stdout.strip() not in ("running", "created", "configured"):
            logs = _podman("logs", "--tail", "40", name, check=False)
            raise SystemExit(f"the container {status.stdout.strip()}:\n{logs.stderr[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() - started > READY_TIMEOUT:
            logs = _podman("logs", "--tail", "40", name, check=False)
            raise SystemExit(f"the container was not ready in time:\n{logs.stderr[-3000:]}")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, help="HMLOPS_STATE_DIR holding the champion")
    parser.add_argument("--requests", type=int, default=2000, help="per server, after warm-up")
    parser.add_argument("--image", help="the serving image (default: out/images.json's)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    if shutil.which("podman") is None:
        raise SystemExit("podman is needed to run the serving image")

    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    state = (args.state or bs.DEFAULT_STATE).resolve()
    bs._ensure_state(state, explicit=args.state is not None)
    image = _serving_image(args.image)

    from hospital_mlops.data.normalize import DEMO_HMAC_KEY
    from hospital_mlops.deploy.manifest_podman_run import translate
    from hospital_mlops.features.diabetes130_stream import example_instances
    from hospital_mlops.governance import registry
    from hospital_mlops.model.example_requests import test_period

    loaded = registry.load_risk_model(bs.MODEL, bs.REF)
    instances = example_instances(test_period(loaded.training), bs.BODIES)
    bodies = [json.dumps({"instances": [i]}).encode() for i in instances]

    work = Path(tempfile.mkdtemp(prefix="hmlops-bench-container-"))
    data = {name: work / f"data-{name}" for name in (HOST, CONTAINER)}
    for directory in data.values():
        directory.mkdir()
        os.chown(directory, UID, UID)
    registry_copy = _registry_copy(state, work)
    secrets = {  # test values for the Secrets the manifest references
        "hmlops-registry": {"MLFLOW_TRACKING_URI": f"sqlite:///{state}/mlflow.db"},
        # the benchmark registry was built by `hmlops demo`, with the labelled demo key
        "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": DEMO_HMAC_KEY},
        "hmlops-prediction-log": {
            "HMLOPS_PREDICTION_LOG_URL": f"sqlite:///{data[CONTAINER]}/predictions.sqlite"
        },
    }
    run = translate(_predictor_source(), secrets=secrets)
    ports = {HOST: _free_port(), CONTAINER: _free_port()}
    name = f"hmlops-bench-{os.getpid()}-predictor"
    argv = run.podman_args(
        image,
        name=name,
        network="podman",
        publish=[("127.0.0.1", ports[CONTAINER], 8080)],
        binds=[(str(registry_copy), str(state)), (str(data[CONTAINER]), str(data[CONTAINER]))],
    )
    # the host process: the same command on 127.0.0.1, the manifest's plain environment
    host_env = {
        **os.environ,
        **run.env,
        "HMLOPS_PREDICTION_LOG_URL": f"sqlite:///{data[HOST]}/predictions.sqlite",
    }
    host_log = work / "host-predictor.log"
    host_argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
                 "--model", f"{bs.MODEL}@{bs.REF}", "--port", str(ports[HOST])]  # fmt: skip
    urls = {
        n: f"http://127.0.0.1:{port}/v1/models/{bs.PREDICTOR}:predict" for n, port in ports.items()
    }
    assert run.readiness is not None
    ready_url = run.readiness.url("127.0.0.1", ports[CONTAINER])

    results: dict[str, Any] = {
        "command": shlex.join([_relative(Path(sys.executable)), *sys.argv]),
        "started_at": started_at,
        "machine": {**bs._machine(), "nproc": len(os.sched_getaffinity(0))},
        "model": f"{bs.MODEL}/{loaded.version}",
        "image": image,
        "container": {
            "from": run.where,
            "podman_run": shlex.join(["podman", *argv]).replace(DEMO_HMAC_KEY, "<demo key>"),
        },
        "host": {"command": shlex.join(["hmlops", *host_argv[3:]])},
        "request": "v1 predict, one real test-period encounter per request, HTTP/1.1 keep-alive "
        "(the bodies of bench_serving.py)",
        "client": "concurrency 1: one http.client connection (bench_serving._load_serial)",
        "warm_up_requests": bs.WARM_UP,
        "rounds": bs.ROUNDS,
        "load_average_before": list(os.getloadavg()),
    }
    host = None
    try:
        with host_log.open("wb") as out:
            host = subprocess.Popen(host_argv, stdout=out, stderr=subprocess.STDOUT, env=host_env)
        _podman(*argv)
        results["container"]["ready_seconds"] = round(_wait_container(name, ready_url), 1)
        bs._wait_ready(host, ports[HOST], bs.PREDICTOR, host_log)
        for url in urls.values():
            bs._check_answer(url, bodies[0])
        for url in urls.values():
            bs._load_serial(url, bodies, bs.WARM_UP)
        per_round = max(args.requests // bs.ROUNDS, 1)
        timings: dict[str, tuple[list[float], float]] = {n: ([], 0.0) for n in urls}
        for _ in range(bs.ROUNDS):
            for server, url in urls.items():
                latencies, wall = bs._load_serial(url, bodies, per_round)
                timings[server] = (timings[server][0] + latencies, timings[server][1] + wall)
    finally:
        _podman("rm", "--force", "--ignore", "--time", "5", name, check=False)
        if host is not None:
            host.terminate()
            try:
                host.wait(timeout=30)
            except subprocess.TimeoutExpired:
                host.kill()
        shutil.rmtree(work, ignore_errors=True)
    for server in urls:
        results[server] = {**results.get(server, {}), **bs._summary(*timings[server])}
    ratios = {
        f"{q}_ratio": round(results[CONTAINER][f"{q}_ms"] / results[HOST][f"{q}_ms"], 3)
        for q in ("p50", "p99")
    }
    results["container_vs_host"] = {
        **ratios,
        "target": TARGET_RATIO,
        "meets_target": all(r <= TARGET_RATIO for r in ratios.values()),
    }
    results["load_average_after"] = list(os.getloadavg())
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _print(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {args.out}")


def _print(results: dict[str, Any]) -> None:
    m = results["machine"]
    print(
        f"\n{m['nproc']} CPUs usable, Python {m['python']}; load average before "
        f"{results['load_average_before'][0]:.2f}, after {results['load_average_after'][0]:.2f}"
    )
    header = f"{'server':<11}{'requests':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'req/s':>8}"
    print(header)
    print("-" * len(header))
    for name in (HOST, CONTAINER):
        s = results[name]
        print(
            f"{name:<11}{s['requests']:>9}{s['p50_ms']:>9.2f}{s['p90_ms']:>9.2f}"
            f"{s['p99_ms']:>9.2f}{s['throughput_rps']:>8.0f}"
        )
    r = results["container_vs_host"]
    print(
        f"container / host: p50 {r['p50_ratio']:.3f}, p99 {r['p99_ratio']:.3f} "
        f"(target ≤ {r['target']}) → {'met' if r['meets_target'] else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
