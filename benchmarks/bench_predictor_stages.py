"""Benchmark the predictor's own work per request, in process: no HTTP, no other server.

Loads the registered champion into ``serving.predictor.RiskPredictor`` exactly as
``hmlops serve`` does (verification, row scorer, a prediction log in a temporary file with its
writer process) and answers one-encounter v1 requests of real test-period encounters, cycled,
through its ``_predict``: validation, features, risk and TreeSHAP reason codes, the answer, the
log rows and the pipe to the writer. It times every call, and inside it the TreeSHAP tables'
pass (``PathTables.margins_and_contributions``, wrapped with a timer), so the pass is measured
where it runs, between the request's other work, not in a loop of its own.

Each of the two passes is measured: the compiled one (``tree_shap_kernel``, served by default)
and the numpy one (``HMLOPS_COMPILED_TREESHAP=0``), each in a process of its own, as served (one
model's tables in the cache, ``gc.freeze()`` after loading), in alternating rounds. Prints and
saves benchmarks/results/predictor_stages.json (``--append``: this run is added to the file's
``runs`` list instead of replacing them; its fields stay at the top of the file).

Usage: python benchmarks/bench_predictor_stages.py --state DIR [--requests 3000] [--append]
``--state`` is a state directory with a registered champion (e.g. the one ``make demo`` made).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import command_line, percentiles_ms, save_and_print

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results" / "predictor_stages.json"
MODEL, REF = "readmission-30d", "champion"
WARM_UP = 300
ROUNDS = 3
PASSES = ("compiled", "numpy")
BODIES = 200


def _predictor(compiled: bool, log_url: str) -> Any:
    from hospital_mlops.model import tree_shap_kernel
    from serving.predictor import RiskPredictor

    os.environ[tree_shap_kernel.SWITCH_ENV] = "1" if compiled else "0"
    predictor = RiskPredictor("readmission", MODEL, REF, prediction_log_url=log_url)
    if not predictor.load():
        raise SystemExit(f"{MODEL}@{REF} did not load: {predictor.not_ready_reason}")
    scorer = predictor.model.row_scorer(predictor.feature_set)
    if scorer.compiled_tables != compiled or not scorer.risk_from_tables:
        raise SystemExit(f"expected the {'compiled' if compiled else 'numpy'} tables' pass")
    return predictor


def _timed_pass(tables: Any, sink: list[float]) -> None:
    """Time every call of this model's tables' pass into ``sink``."""
    inner = tables.margins_and_contributions

    def timed(x: np.ndarray, base_margin: np.float32) -> Any:
        started = time.perf_counter()
        answer = inner(x, base_margin)
        sink.append(time.perf_counter() - started)
        return answer

    tables.margins_and_contributions = timed


def _child(name: str, requests: int) -> None:
    """One pass, one process (as served: one model, its tables alone in the cache): prints the
    timings as JSON."""
    from hospital_mlops.features.diabetes130_stream import example_instances
    from hospital_mlops.governance import registry
    from hospital_mlops.model.example_requests import test_period

    loaded = registry.load_risk_model(MODEL, REF)
    bodies = [{"instances": [i]} for i in example_instances(test_period(loaded.training), BODIES)]
    with tempfile.TemporaryDirectory() as work:
        predictor = _predictor(name == "compiled", f"sqlite:///{Path(work) / 'log.sqlite'}")
        passes: list[float] = []
        _timed_pass(predictor.model.row_scorer(predictor.feature_set)._tables, passes)
        gc.collect()
        gc.freeze()  # as serve_predictor does
        for i in range(WARM_UP):
            predictor._predict(bodies[i % BODIES], {})
        passes.clear()
        answered: list[float] = []
        for i in range(requests):
            started = time.perf_counter()
            predictor._predict(bodies[i % BODIES], {})
            answered.append(time.perf_counter() - started)
        predictor.stop()
    print(json.dumps({"version": loaded.version, "request": answered, "tables_pass": passes}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, required=True, help="HMLOPS_STATE_DIR")
    parser.add_argument("--requests", type=int, default=3000, help="per pass")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--append", action="store_true", help="add this run to the file's runs, keep the others"
    )
    parser.add_argument("--child", choices=PASSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["HMLOPS_STATE_DIR"] = str(args.state.resolve())
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    if args.child:
        _child(args.child, args.requests)
        return
    per_round = max(args.requests // ROUNDS, 1)
    timings: dict[str, dict[str, list[float]]] = {
        name: {"request": [], "tables_pass": []} for name in PASSES
    }
    version = None
    for _ in range(ROUNDS):  # alternating: a busy neighbour slows both passes alike
        for name in PASSES:
            argv = [sys.executable, __file__, "--state", str(args.state), "--child", name,
                    "--requests", str(per_round)]  # fmt: skip
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"the {name} pass failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            version = result["version"]
            for kind in ("request", "tables_pass"):
                timings[name][kind] += result[kind]
    report: dict[str, Any] = {
        "command": command_line(),
        "model": f"{MODEL}/{version}",
        "request": "one real test-period encounter, v1, through RiskPredictor._predict "
        "(validation, features, risk, reasons, the answer, the log rows and the pipe)",
        "rounds": ROUNDS,
        "warm_up_per_round": WARM_UP,
    }
    for name, kinds in timings.items():
        report[name] = {
            kind: {"n": len(values), **percentiles_ms(values)} for kind, values in kinds.items()
        }
    save_and_print(report, args.out, append=args.append)


if __name__ == "__main__":
    main()
