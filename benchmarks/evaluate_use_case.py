"""Run one use case's pipeline on the bundled diabetes130 extract and save its evaluation.

    python benchmarks/evaluate_use_case.py --use-case post_acute_at_admission

Writes ``benchmarks/results/use_case_<id>.json``: the test slice's headline (AUROC with its
patient-cluster bootstrap CI, the comparator's AUROC, calibration slope and intercept, ECE, Brier,
the threshold and alerts per 100), every pre-declared gate with what it required and observed,
when the gates were declared relative to the evaluation, the label's share and what the label
codes excluded, and whether the model was registered. ``--append`` keeps earlier runs. The docs'
tables of it are written by ``python benchmarks/doc_tables.py``. Uses a throw-away store and
registry (nothing is written to ``.hmlops``) and the labelled demo key (the extract is public).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench_common import command_line, save_and_print

from hospital_mlops import artifacts

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def evaluate(use_case: str, work: Path) -> dict[str, Any]:
    env = {**os.environ, "HMLOPS_STATE_DIR": str(work / "state")}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, "-m", "hospital_mlops.cli", "pipeline", "run", "--source", "diabetes130",
         "--use-case", use_case, "--out", str(work / "store"), "--demo-key", "--json"],
        capture_output=True, text=True, env=env, cwd=ROOT, check=False,
    )  # fmt: skip
    if proc.returncode not in (0, 1) or not proc.stdout.strip():
        raise SystemExit(f"the pipeline did not finish: {proc.stderr.strip().splitlines()[-1:]}")
    summary = json.loads(proc.stdout)
    runs = work / "store" / "runs"
    model_dir = next(runs.glob("*/model"))
    evaluation = json.loads((model_dir / artifacts.EVALUATION).read_text())
    training = json.loads((model_dir / artifacts.TRAINING).read_text())
    gates = json.loads(next(runs.glob(f"*/kfp/**/{artifacts.GATES}")).read_text())
    features_stats = next(
        (a for a in summary["artifacts"] if a["name"] == "published_features"), {}
    )
    return {
        "use_case": use_case,
        "source": "diabetes130",
        "model": summary["model"]["name"],
        "registered_version": summary["model"]["version"],
        "feature_set_version": training["feature_set_version"],
        "headline": evaluation["headline"],
        "gates": summary["model_gates"],
        "gates_passed": summary["model_gates_passed"],
        "gates_declared_on": gates.get("gates_declared_on"),
        "gates_declared": gates.get("gates_declared"),
        "evaluated_on": gates["evaluated_on"],
        "split": training["split"],
        "published_features_sha256": features_stats.get("sha256"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--use-case", required=True, help="an id from config/use_case.yaml")
    parser.add_argument("--append", action="store_true", help="keep the runs already saved")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hmlops-eval-") as tmp:
        report = {**evaluate(args.use_case, Path(tmp)), "command": command_line()}
    save_and_print(report, RESULTS / f"use_case_{args.use_case}.json", append=args.append)


if __name__ == "__main__":
    main()
