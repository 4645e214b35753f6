"""``hmlops pipeline``: run the Kubeflow pipeline locally (kfp.local), compile its IR, or submit
it to a Kubeflow Pipelines host; and the run summary a local run prints."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hospital_mlops.cli.defaults import SOURCE_HELP
from hospital_mlops.cli.exit_codes import EXIT_GATE_FAILED
from hospital_mlops.use_case import purpose_of


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", help=SOURCE_HELP)
    p.set_defaults(source_default=True)
    p.add_argument(
        "--use", help="purpose (catalog `uses`; default: the use case's declared purpose)"
    )
    p.add_argument(
        "--use-case",
        help="use case id from config/use_case.yaml (default: its first, the readmission model)",
    )
    p.add_argument("--input", type=Path, help="the extract to ingest (default: the catalog's)")
    p.add_argument("--scenario", help="inject a named fault scenario into the extract first")
    p.add_argument("--out", type=Path, default=Path("out/run"), help="store and outputs directory")
    p.add_argument("--catalog", type=Path, help="catalog file (default: config/catalog.yaml)")
    p.add_argument("--demo-key", action="store_true", help="tokenize with the labelled demo key")
    p.add_argument("--synthetic-encounters", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")
    p.add_argument("--no-model", action="store_true", help="stop after publish (data layers only)")
    p.add_argument(
        "--runner", choices=["subprocess", "container"], default="subprocess",
        help="kfp.local's runner: steps as processes of this venv, or in the pipeline image "
        "(DockerRunner; Docker or podman)",
    )  # fmt: skip
    p.add_argument("--image", help="the pipeline image for --runner container (make images)")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pipe = sub.add_parser("pipeline", help="run, compile or submit the Kubeflow pipeline")
    psub = pipe.add_subparsers(dest="action", required=True)
    _add_run_args(psub.add_parser("run", help="run locally with kfp.local"))
    comp = psub.add_parser("compile", help="write the KFP IR YAML")
    comp.add_argument("--out", type=Path, default=Path("pipelines/compiled/data_pipeline.yaml"))
    comp.add_argument("--image", help="pipeline image (default: components.DEFAULT_IMAGE)")
    submit = psub.add_parser("submit", help="submit to a Kubeflow Pipelines host")
    submit.add_argument("--host", required=True)
    submit.add_argument("--source", help=SOURCE_HELP)
    submit.set_defaults(source_default=True)
    submit.add_argument("--use", help="purpose (default: the use case's declared purpose)")
    submit.add_argument("--use-case", help="use case id from config/use_case.yaml")
    submit.add_argument("--input", default="", help="extract path as seen by the pods")
    submit.add_argument("--image")
    submit.add_argument("--experiment", default="hospital-data")
    submit.add_argument(
        "--service-account",
        default="hmlops-pipeline-runner",
        help="the runs' identity (kustomize/rbac/pipeline-runner)",
    )
    submit.add_argument(
        "--token-file", type=Path, help="a bearer token for the KFP API (kfp's existing_token)"
    )


def dispatch(args: argparse.Namespace) -> int:
    if args.action == "run":
        return _run(args)
    if args.action == "compile":
        from pipelines.runner import compile_pipeline

        path = compile_pipeline(args.out, image=args.image)
        print(f"compiled {path}")
        if "@sha256:" not in (args.image or ""):
            print(
                "hmlops: warning: the IR names the pipeline image by tag; for a cluster, "
                "compile with the pushed image's digest (--image REPOSITORY@sha256:…)",
                file=sys.stderr,
            )
        return 0
    from pipelines.runner import PipelineSubmitError, submit

    try:
        result = submit(args)
    except PipelineSubmitError as exc:  # the host is unreachable or refused: one line
        print(f"hmlops: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines.runner import run_locally

    summary = run_locally(
        source=args.source,
        use=purpose_of(args.use, args.use_case),
        extract=args.input,
        scenario=args.scenario,
        out=args.out,
        catalog=args.catalog,
        demo_key=args.demo_key,
        synthetic_encounters=args.synthetic_encounters,
        seed=args.seed,
        train_model=not args.no_model,
        runner=args.runner,
        image=args.image,
        use_case=args.use_case,
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print_run_summary(summary)
    return 0 if summary["status"] == "succeeded" else EXIT_GATE_FAILED


def run_demo_pipeline(out: Path, use_case: str | None = None) -> dict[str, Any]:
    """The use case's first source's bundled extract through the pipeline (kfp.local), with the
    labelled demo tokenization key, for ``use_case`` (None: the first)."""
    from hospital_mlops.cli.defaults import first_source
    from pipelines.runner import run_locally

    return run_locally(
        source=first_source(use_case),
        use=purpose_of(None, use_case),
        extract=None,
        scenario=None,
        out=out,
        catalog=None,
        demo_key=True,
        use_case=use_case,
    )


def print_run_summary(summary: dict[str, Any]) -> None:
    """A run as lines: the gates and their failures, the artifacts, the model's evaluation,
    gates and registration, and where its lineage is."""
    print(f"run {summary['run_id']}: {summary['status'].upper()} (source {summary['source']})")
    for gate in summary["gates"]:
        mark = "pass" if gate["success"] else "FAIL"
        print(f"  [{mark}] {gate['layer']:9} {gate['name']}")
        for f in gate["failures"]:
            print(
                f"         {f['table']}.{f['column'] or '*'}: {f['expectation']} — expected "
                f"{f['expected']}; observed {f['observed']}"
            )
    if summary.get("error"):
        print(f"  error: {summary['error']}")
    for art in summary["artifacts"]:
        print(f"  {art['name']:20} {art['sha256'][:16]}  {art['path']}")
    if "evaluation" in summary:
        e = summary["evaluation"]
        print(
            f"  model: AUROC {e['auroc']:.3f} "
            f"(95% CI {e['auroc_ci'][0]:.3f}–{e['auroc_ci'][1]:.3f}), ECE {e['ece']:.4f}, "
            f"slope {e['calibration_slope']:.2f}, comparator AUROC "
            f"{e['comparator_auroc']:.3f}, {e['alerts_per_100']:.1f} alerts/100"
        )
        for g in summary.get("model_gates", []):
            mark = "pass" if g["passed"] else "FAIL"
            print(f"  [{mark}] model     {g['name']}: {g['observed']} (required {g['required']})")
    if summary.get("model"):
        m = summary["model"]
        registered = f"version {m['version']}" if m["version"] else "NOT registered (gates failed)"
        print(f"  registry: {m['name']} {registered}; MLflow run {m['run_id']}")
    print(f"  lineage: {summary['lineage_path']}")
