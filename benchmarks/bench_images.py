"""Benchmark the images: build times (cold, warm, after a code change), sizes, and the pipeline's
wall time in containers against the subprocess runner.

Prints and saves (benchmarks/results/images.json):
- the base image from Debian's packages (debootstrap + podman import), rebuilt;
- each image built cold (no layer cache; packages from the build machine's download cache, whose
  state is recorded), warm (nothing changed), and after a one-line code change (built from a copy
  of the tree): seconds, and whether the dependency layer was reused;
- each image's size and its layers' sizes (base, dependencies, code);
- the whole diabetes130 pipeline (data layers and model) once with each runner: wall seconds and
  the ratio container / subprocess.

The images it builds are tagged :bench and removed at the end (the layers they share with
`make images` stay). Needs root, podman and the images' base (make images builds it).

Usage: python benchmarks/bench_images.py [--skip-pipeline] [--skip-base]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import save_and_print  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "images.json"
KEY = "benchmark-only-hmac-key-0123456789abcdef0123"
BASE = "localhost/hospital-mlops/base-python:3.11-bookworm"
DOCKERFILES = {"pipeline": "components/Dockerfile", "serving": "serving/Dockerfile"}
DOWNLOAD_CACHE = Path("/var/tmp/buildah-cache")  # podman's RUN --mount=type=cache, as root
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers" / "containers.conf"))


def _timed(args: list[str], cwd: Path = ROOT) -> float:
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"failed: {' '.join(args)}")
    return round(time.perf_counter() - started, 1)


def _build(name: str, tag: str, context: Path, *extra: str) -> float:
    args = ["podman", "build", "-f", DOCKERFILES[name], "--network", "host",
            "--build-arg", f"BASE_IMAGE={BASE}", "-t", tag, *extra]  # fmt: skip
    ca = Path("/etc/ssl/certs/ca-certificates.crt")
    if ca.exists():
        args += ["--secret", f"id=build-ca,src={ca}"]
    return _timed([*args, "."], cwd=context)


def _inspect(ref: str) -> dict:
    out = subprocess.run(["podman", "image", "inspect", ref], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return dict(json.loads(out)[0])


def _layers(ref: str) -> list[dict]:
    """Each layer's size and the instruction that made it (oldest first), empty layers left out."""
    out = subprocess.run(
        ["podman", "history", "--no-trunc", "--format", "json", ref],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rows = [r for r in reversed(json.loads(out)) if int(r.get("size", 0)) > 0]
    return [{"mb": round(int(r["size"]) / 1e6, 1), "made_by": str(r.get("CreatedBy", ""))[:90]}
            for r in rows]  # fmt: skip


def _tree_copy(target: Path) -> None:
    """The tracked files (and new ones not yet committed) of the working tree."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for rel in files:
        src = ROOT / rel
        if src.is_file():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / rel)


def bench_builds() -> dict:
    cache_mb = (
        round(sum(f.stat().st_size for f in DOWNLOAD_CACHE.rglob("*") if f.is_file()) / 1e6)
        if DOWNLOAD_CACHE.exists() else 0
    )  # fmt: skip
    report: dict = {"download_cache_mb_before": cache_mb, "images": {}}
    with tempfile.TemporaryDirectory(prefix="hmlops-bench-tree-") as tmp:
        changed = Path(tmp)
        _tree_copy(changed)
        with (changed / "hospital_mlops" / "paths.py").open("a") as fh:
            # new each run: a tree built before would come from the cache
            fh.write(f"# a one-line code change (bench_images.py) {time.time_ns()}\n")
        for name in DOCKERFILES:
            tag = f"localhost/hospital-mlops/{name}:bench"
            cold = _build(name, tag, ROOT, "--no-cache")
            _build(name, tag, ROOT)  # a build after --no-cache may still refill the cache
            warm = _build(name, tag, ROOT)
            before = _inspect(tag)["RootFS"]["Layers"]
            code = _build(name, f"{tag}-changed", changed)
            after = _inspect(f"{tag}-changed")["RootFS"]["Layers"]
            shared = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0
            )
            info = _inspect(tag)
            report["images"][name] = {
                "cold_s": cold,
                "warm_s": warm,
                "code_change_s": code,
                # base, the user, the venv: the dependency layer is the third
                "layers_reused_after_code_change": shared,
                "dependency_layer_reused": shared >= 3,
                "size_mb": round(int(info["Size"]) / 1e6),
                "layers": _layers(tag),
            }
            subprocess.run(["podman", "rmi", f"{tag}-changed", tag], capture_output=True)
    return report


def bench_base() -> dict:
    """A base built afresh under a tag of its own (rebuilding the real one would invalidate every
    layer `make images` cached on it)."""
    tag = "localhost/hospital-mlops/base-python:bench"
    env = {**os.environ, "FORCE": "1"}
    started = time.perf_counter()
    subprocess.run(["containers/build-base-image.sh", tag], cwd=ROOT, env=env, check=True,
                   capture_output=True)  # fmt: skip
    seconds = round(time.perf_counter() - started, 1)
    size = round(int(_inspect(tag)["Size"]) / 1e6)
    subprocess.run(["podman", "rmi", tag], capture_output=True)
    return {"rebuild_s": seconds, "size_mb": size}


def bench_pipeline(image: str) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="hmlops-bench-images-") as tmp:
        for runner in ("subprocess", "container"):
            state = Path(tmp) / f"state-{runner}"
            env = {**os.environ, "HMLOPS_HMAC_KEY": KEY, "HMLOPS_STATE_DIR": str(state)}
            env.pop("MLFLOW_TRACKING_URI", None)
            out = str(Path(tmp) / runner)
            args = [sys.executable, "-m", "hospital_mlops.cli", "pipeline", "run", "--json",
                    "--source", "diabetes130", "--out", out, "--runner", runner]  # fmt: skip
            if runner == "container":
                args += ["--image", image]
            started = time.perf_counter()
            proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
            wall = round(time.perf_counter() - started, 1)
            if proc.returncode != 0:
                sys.stderr.write(proc.stderr[-4000:])
                raise SystemExit(f"the {runner} run failed")
            summary = json.loads(proc.stdout)
            results[runner] = {"wall_s": wall, "model_sha256": summary["model_sha256"]}
    results["ratio_container_over_subprocess"] = round(
        results["container"]["wall_s"] / results["subprocess"]["wall_s"], 2
    )
    results["same_model"] = (
        results["container"]["model_sha256"] == results["subprocess"]["model_sha256"]
    )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-pipeline", action="store_true")
    parser.add_argument("--skip-base", action="store_true")
    args = parser.parse_args()
    report: dict = {"command": "python benchmarks/bench_images.py " + " ".join(sys.argv[1:])}
    if not args.skip_base:
        report["base"] = bench_base()
    report["builds"] = bench_builds()
    if not args.skip_pipeline:
        images = json.loads((ROOT / "out" / "images.json").read_text())["images"]
        report["pipeline"] = bench_pipeline(images["pipeline"]["digest_ref"])
    save_and_print(report, RESULTS)


if __name__ == "__main__":
    main()
