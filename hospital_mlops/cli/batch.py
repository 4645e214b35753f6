"""``hmlops batch``: score today's census with a registered model and write its worklist,
directly or through the batch-scoring KFP pipeline (kfp.local)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hospital_mlops.cli.exit_codes import UsageError


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    batch = sub.add_parser("batch", help="batch scoring: a census scored into a worklist")
    bsub = batch.add_subparsers(dest="action", required=True)
    score = bsub.add_parser("score", help="score the census and write the worklist to --out")
    _common(score)
    score.add_argument("--out", type=Path, required=True, help="a new directory for the list")
    pipe = bsub.add_parser("pipeline", help="the batch-scoring KFP pipeline")
    psub = pipe.add_subparsers(dest="pipeline_action", required=True)
    prun = psub.add_parser("run", help="run it locally with kfp.local")
    _common(prun)
    prun.add_argument("--out", type=Path, default=Path("out/batch"), help="kfp.local's root")
    pcomp = psub.add_parser("compile", help="compile to KFP IR (strictly validated)")
    pcomp.add_argument("--out", type=Path, default=Path("pipelines/compiled/batch_pipeline.yaml"))
    pcomp.add_argument("--image", help="pipeline image (default: the project's)")
    psched = psub.add_parser("schedule", help="create its recurring run on a KFP host")
    psched.add_argument("--host", required=True, help="the KFP API endpoint")
    psched.add_argument(
        "--file",
        type=Path,
        required=True,
        help="the recurring run's description (manifests/kfp/<model>-worklist-recurring-run.yaml)",
    )


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="NAME@ALIAS or NAME@N")
    p.add_argument(
        "--store", type=Path, default=Path("out/demo"), help="the pipeline's store directory"
    )
    p.add_argument(
        "--census", type=int, help="encounters in the census (default: one day, as declared)"
    )
    p.add_argument("--capacity", type=int, help="worklist size (default: the use case's)")
    p.add_argument("--json", action="store_true")


def _model(text: str) -> tuple[str, str]:
    name, _, ref = text.partition("@")
    if not name or not ref:
        raise UsageError(f"--model {text!r}: give NAME@ALIAS or NAME@N")
    return name, ref


def dispatch(args: argparse.Namespace) -> int:
    if args.action == "pipeline" and args.pipeline_action == "compile":
        from pipelines.batch_runner import compile_batch

        print(f"compiled {compile_batch(args.out, image=args.image)}")
        return 0
    if args.action == "pipeline" and args.pipeline_action == "schedule":
        from pipelines import monitoring_runner as runs

        spec = runs.load_recurring_run(args.file)
        package = runs.project_root() / spec.pipeline_package
        print(json.dumps(runs.schedule(args.host, spec, package), indent=2))
        return 0
    name, ref = _model(args.model)
    if args.census is not None and args.census < 1:
        raise UsageError("--census must be at least 1")
    if args.capacity is not None and args.capacity < 1:
        raise UsageError("--capacity must be at least 1")
    if not args.store.is_dir():
        raise UsageError(f"--store {args.store}: no such directory (run the pipeline first)")
    if args.action == "score":
        from hospital_mlops.inference.batch import score_census

        result: dict[str, Any] = score_census(
            name, ref, args.store, args.out, census_size=args.census, capacity=args.capacity
        )
    else:
        from pipelines.batch_runner import run_batch_locally

        found = run_batch_locally(
            out=args.out,
            model=name,
            ref=ref,
            store_root=args.store,
            census_size=args.census or 0,
            capacity=args.capacity or 0,
        )
        result = {"run_id": found["run_id"], **found["worklist"]}
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    print(
        f"worklist of {result['model']} version {result['version']} ({result['use_case']}): "
        f"{result['listed']} of {result['census']} encounters listed, in {result['out']}"
    )
    return 0
