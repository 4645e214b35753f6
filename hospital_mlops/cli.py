"""``hmlops``: the one command-line entry point.

Errors a user can act on (a bad catalog, a missing extract or key, a refused use) print one clear
line to stderr and exit 2; a failed gate exits 1 with its summary. Nothing prints a stack trace
for an expected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hospital_mlops.catalog import CatalogError, UnknownSource, UseNotPermitted, load_catalog
from hospital_mlops.faults import UnknownScenario
from hospital_mlops.lineage import LineageNotFound, LineageStore, format_chain
from hospital_mlops.normalize import MissingHmacKey
from hospital_mlops.sources.extract import ExtractError

EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class UsageError(RuntimeError):
    """A problem with what the user asked for; printed as one line, exit 2."""


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="diabetes130", help="catalogued source name")
    p.add_argument("--use", default="readmission_risk_model", help="purpose (catalog `uses`)")
    p.add_argument("--input", type=Path, help="the extract to ingest (default: the catalog's)")
    p.add_argument("--scenario", help="inject a named fault scenario into the extract first")
    p.add_argument("--out", type=Path, default=Path("out/run"), help="store and outputs directory")
    p.add_argument("--catalog", type=Path, help="catalog file (default: config/catalog.yaml)")
    p.add_argument("--demo-key", action="store_true", help="tokenize with the labelled demo key")
    p.add_argument("--synthetic-encounters", type=int, default=20_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", action="store_true", help="print the run summary as JSON on stdout")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the data pipeline on the bundled dataset")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))

    pipe = sub.add_parser("pipeline", help="run, compile or submit the Kubeflow pipeline")
    psub = pipe.add_subparsers(dest="action", required=True)
    _add_run_args(psub.add_parser("run", help="run locally with kfp.local"))
    comp = psub.add_parser("compile", help="write the KFP IR YAML")
    comp.add_argument("--out", type=Path, default=Path("pipelines/compiled/data_pipeline.yaml"))
    comp.add_argument("--image", help="pipeline image (default: components.DEFAULT_IMAGE)")
    submit = psub.add_parser("submit", help="submit to a Kubeflow Pipelines host")
    submit.add_argument("--host", required=True)
    submit.add_argument("--source", default="diabetes130")
    submit.add_argument("--use", default="readmission_risk_model")
    submit.add_argument("--input", default="", help="extract path as seen by the pods")
    submit.add_argument("--image")
    submit.add_argument("--experiment", default="hospital-data")

    lin = sub.add_parser("lineage", help="print the chain from a run or artifact to its source")
    lin.add_argument("ref", help="run id, or artifact sha256 (a unique prefix is enough)")
    lin.add_argument("--out", type=Path, default=Path("out/demo"), help="the store directory")
    lin.add_argument("--json", action="store_true")

    cat = sub.add_parser("catalog", help="validate and summarize the data catalog")
    cat.add_argument("--catalog", type=Path)

    syn = sub.add_parser("synthetic", help="generate a synthetic multi-table EHR extract")
    syn.add_argument("--out", type=Path, required=True)
    syn.add_argument("--encounters", type=int, default=20_000)
    syn.add_argument("--seed", type=int, default=7)

    sub.add_parser("scenarios", help="list the named fault scenarios")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except (
        CatalogError,
        UnknownSource,
        UseNotPermitted,
        ExtractError,
        MissingHmacKey,
        LineageNotFound,
        UsageError,
        UnknownScenario,
    ) as exc:
        print(f"hmlops: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args.out)
    if args.command == "pipeline":
        if args.action == "run":
            return _pipeline_run(args)
        if args.action == "compile":
            from hospital_mlops.kfp_runner import compile_pipeline

            path = compile_pipeline(args.out, image=args.image)
            print(f"compiled {path}")
            return 0
        from hospital_mlops.kfp_runner import submit

        print(json.dumps(submit(args), indent=2))
        return 0
    if args.command == "lineage":
        store = LineageStore(args.out)
        chain = store.chain(args.ref)
        if args.json:
            print(json.dumps([{"depth": d, **n} for d, n in chain], indent=2, default=str))
        else:
            print(format_chain(chain))
        return 0
    if args.command == "catalog":
        return _catalog(args.catalog)
    if args.command == "synthetic":
        from hospital_mlops.sources.synthetic import generate_extract

        path = generate_extract(args.out, args.encounters, seed=args.seed)
        print(f"wrote a synthetic extract of {args.encounters} encounters to {path}")
        return 0
    if args.command == "scenarios":
        from hospital_mlops.faults import SCENARIOS

        for s in SCENARIOS.values():
            print(
                f"{s.name:18} {'/'.join(sorted(s.sources)):22} caught at {s.caught_at:9} "
                f"{s.description}"
            )
        return 0
    raise UsageError(f"unknown command {args.command}")


def _catalog(path: Path | None) -> int:
    from hospital_mlops.catalog import catalog_version

    catalog = load_catalog(path)
    print(f"catalog {catalog.version} (content {catalog_version(catalog)}): valid")
    for name, src in catalog.sources.items():
        tables = ", ".join(f"{t}({len(s.columns)})" for t, s in src.tables.items())
        print(f"- {name}: {src.system}; owner {src.owner}; uses {src.permissible_uses}; {tables}")
    return 0


def _pipeline_run(args: argparse.Namespace) -> int:
    from hospital_mlops.kfp_runner import run_locally

    summary = run_locally(
        source=args.source,
        use=args.use,
        extract=args.input,
        scenario=args.scenario,
        out=args.out,
        catalog=args.catalog,
        demo_key=args.demo_key,
        synthetic_encounters=args.synthetic_encounters,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary)
    return 0 if summary["status"] == "succeeded" else EXIT_GATE_FAILED


def _print_summary(summary: dict[str, Any]) -> None:
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
    print(f"  lineage: {summary['lineage_path']}")


def _demo(out: Path) -> int:
    from hospital_mlops.kfp_runner import run_locally

    print(
        "hospital-mlops demo: the bundled UCI Diabetes 130-US extract through the Kubeflow "
        "data pipeline (kfp.local), with the labelled DEMO tokenization key.",
        flush=True,
    )
    summary = run_locally(
        source="diabetes130",
        use="readmission_risk_model",
        extract=None,
        scenario=None,
        out=out,
        catalog=None,
        demo_key=True,
    )
    _print_summary(summary)
    run_dir = out / "runs" / summary["run_id"]
    print()
    print("Open:")
    print(f"  gate reports (self-contained HTML): {run_dir / 'gates'}/*.html")
    print(f"  run summary (JSON):                 {summary['lineage_path']}")
    if summary.get("final_artifact_sha256"):
        print(
            f"  published feature snapshot:         "
            f"{out / 'published' / 'features' / summary['final_artifact_sha256']}"
        )
    print(f"  lineage:  hmlops lineage {summary['run_id']} --out {out}")
    print(f"  compiled pipeline IR:  hmlops pipeline compile --out {out / 'data_pipeline.yaml'}")
    return 0 if summary["status"] == "succeeded" else EXIT_GATE_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
