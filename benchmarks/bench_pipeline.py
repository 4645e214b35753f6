"""Benchmark the pipeline as users run it (`hmlops pipeline run`, kfp.local).

Prints and saves (benchmarks/results/pipeline.json):
- diabetes130, data layers only (`--no-model`): wall seconds;
- diabetes130, the whole `make demo` pipeline (data layers, then train → evaluate with 1,000
  bootstrap replicates → gate → register in MLflow): wall seconds, and the train + evaluate
  step time;
- synthetic at 100k and 1M encounters (with their vitals and labs): ingest → publish wall
  seconds, rows/s and the peak RSS of the largest process (each KFP step is its own process);
- the linearity ratio: time(1M) / time(100k), which must stay ≤ 11.

Extract generation is timed separately and not counted in ingest → publish.

``--append`` adds this run to the file's ``runs`` list instead of replacing them (its fields stay
at the top of the file, where readers of the latest run look): repeated runs, e.g. of the 1M
size alone, are kept for the docs' tables of runs.

Usage: python benchmarks/bench_pipeline.py [--sizes 100000 1000000] [--skip-d130] [--append]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import command_line, with_runs

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
KEY = "benchmark-only-hmac-key-0123456789abcdef0123"


def _measure(args: list[str]) -> None:
    """Child mode: run the command, then report the peak RSS of its largest descendant.

    RUSAGE_CHILDREN is a high-water mark over every child a process ever waited for, so each
    measurement gets a fresh measuring process of its own."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False)
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    sys.stderr.write(proc.stderr)
    print(json.dumps({"rc": proc.returncode, "peak_kib": peak_kib, "stdout": proc.stdout}))


def _run(args: list[str]) -> tuple[float, float, dict]:
    """Run a command; return (wall s, peak RSS MiB of its largest process, its JSON output)."""
    env = {**os.environ, "HMLOPS_HMAC_KEY": KEY}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--measure", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    wall = time.perf_counter() - started
    report = json.loads(proc.stdout)
    if report["rc"] != 0:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"benchmark command failed: {' '.join(args)}")
    out = report["stdout"]
    summary = json.loads(out) if out.strip().startswith("{") else {}
    return wall, report["peak_kib"] / 1024, summary


def _pipeline(source: str, out: Path, extract: Path | None, model: bool = False) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "hospital_mlops.cli",
        "pipeline",
        "run",
        "--json",
        "--source",
        source,
        "--out",
        str(out),
    ]
    if extract is not None:
        cmd += ["--input", str(extract)]
    if not model:
        cmd.append("--no-model")
    wall, peak, summary = _run(cmd)
    assert summary["status"] == "succeeded", summary
    steps: dict[str, float] = {}
    timings = out / "runs" / summary["run_id"] / "timings.jsonl"
    for line in timings.read_text().splitlines():
        t = json.loads(line)
        steps[f"{t['layer']}/{t['step']}"] = t["seconds"]
    result = {
        "wall_s": round(wall, 2),
        "peak_rss_mib": round(peak, 1),
        "steps_s": steps,
        "orchestration_s": round(wall - sum(steps.values()), 2),
        "metrics": summary["metrics"],
    }
    if model:
        result["train_evaluate_s"] = round(
            sum(v for k, v in steps.items() if k.startswith(("train/", "evaluate/"))), 2
        )
        result["evaluation"] = summary["evaluation"]
    return result


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--measure":
        _measure(sys.argv[2:])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--skip-d130", action="store_true")
    parser.add_argument(
        "--append", action="store_true", help="add this run to the file's runs, keep the others"
    )
    args = parser.parse_args()
    results: dict = {
        "command": command_line(),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="hmlops-bench-") as tmp:
        work = Path(tmp)
        # the registry of this benchmark, not the developer's
        os.environ["HMLOPS_STATE_DIR"] = str(work / "registry")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        if not args.skip_d130:
            results["diabetes130"] = _pipeline("diabetes130", work / "d130", None)
            print(
                f"diabetes130 (101,766 encounters), data layers: "
                f"{results['diabetes130']['wall_s']} s wall",
                flush=True,
            )
            full = _pipeline("diabetes130", work / "d130-model", None, model=True)
            results["diabetes130_with_model"] = full
            print(
                f"diabetes130, whole demo pipeline (data + train/evaluate/gate/register): "
                f"{full['wall_s']} s wall; train + evaluate steps {full['train_evaluate_s']} s",
                flush=True,
            )
        for n in args.sizes:
            extract = work / f"extract-{n}"
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "hospital_mlops.cli",
                    "synthetic",
                    "--out",
                    str(extract),
                    "--encounters",
                    str(n),
                ],
                check=True,
                capture_output=True,
            )
            gen = time.perf_counter() - started
            run = _pipeline("synthetic", work / f"store-{n}", extract)
            rows = run["metrics"]["raw_rows"]
            run.update(
                {
                    "encounters": n,
                    "raw_rows_all_tables": rows,
                    "generate_s": round(gen, 2),
                    "encounters_per_s": round(n / run["wall_s"]),
                    "rows_per_s": round(rows / run["wall_s"]),
                }
            )
            results[f"synthetic_{n}"] = run
            print(
                f"synthetic {n:>9,} encounters ({rows:,} rows in all tables): "
                f"{run['wall_s']} s ingest→publish, {run['rows_per_s']:,} rows/s, peak RSS "
                f"{run['peak_rss_mib']} MiB (generation {gen:.1f} s, not counted)",
                flush=True,
            )
    sizes = sorted(args.sizes)
    if len(sizes) >= 2:
        small, large = results[f"synthetic_{sizes[0]}"], results[f"synthetic_{sizes[-1]}"]
        ratio = large["wall_s"] / small["wall_s"]
        results["linearity"] = {"rows_ratio": sizes[-1] / sizes[0], "time_ratio": round(ratio, 2)}
        print(f"{sizes[-1] // sizes[0]}x encounters took {ratio:.2f}x the time (limit 11x)")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    saved = with_runs(results, RESULTS, args.append)
    RESULTS.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"saved {RESULTS} ({len(saved['runs'])} runs)")


if __name__ == "__main__":
    main()
