"""``hmlops``: the one command-line entry point.

Errors a user can act on (a bad catalog, a missing extract or key, a refused use) print one clear
line to stderr and exit 2; a failed gate exits 1 with its summary. Nothing prints a stack trace
for an expected failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hospital_mlops.cli import access as cli_access
from hospital_mlops.cli import cds as cli_cds
from hospital_mlops.cli import governance as cli_governance
from hospital_mlops.cli import keys as cli_keys
from hospital_mlops.cli import monitoring as cli_monitoring
from hospital_mlops.cli import rollout as cli_rollout
from hospital_mlops.cli import serving as cli_serving
from hospital_mlops.governance.config import ROLES
from hospital_mlops.quiet import telemetry_off

# The errors a user can act on, by module: the CLI imports a module only when a command needs
# it (``hmlops --help`` must not load XGBoost), and an error class can only be raised once its
# module is loaded, so ``main`` checks against the loaded ones.
USAGE_ERRORS = (
    ("hospital_mlops.data.catalog", ("CatalogError", "UnknownSource", "UseNotPermitted")),
    ("hospital_mlops.data.sources.extract", ("ExtractError",)),
    ("hospital_mlops.data.normalize", ("MissingHmacKey",)),
    ("hospital_mlops.security.key_rotation", ("KeyRotationError",)),
    ("hospital_mlops.data.lineage", ("LineageNotFound",)),
    ("hospital_mlops.data.published_index", ("PublishedIndexError",)),
    ("hospital_mlops.data.faults", ("UnknownScenario",)),
    ("hospital_mlops.use_case", ("UseCaseError",)),
    ("hospital_mlops.governance.config", ("GovernanceError",)),
    (
        "hospital_mlops.governance.registry",
        ("RegistryUnavailable", "RegistryError", "RegistrationFailed"),
    ),
    ("hospital_mlops.governance.compare", ("CompareError",)),
    ("hospital_mlops.cli.serving", ("ServeUsageError",)),
    ("hospital_mlops.cli.ports", ("PortUsageError",)),
    ("hospital_mlops.cli.cds", ("CdsUsageError",)),
    ("hospital_mlops.cli.governance", ("GovernanceUsageError",)),
    ("hospital_mlops.security.api_access", ("ApiTokensError",)),
    ("hospital_mlops.ehr.fhir_mapping", ("FhirMappingError",)),
    ("hospital_mlops.ehr.cds_config", ("CdsConfigError",)),
    ("hospital_mlops.inference.prediction_log", ("PredictionNotFound",)),
    ("hospital_mlops.inference.config", ("ServingConfigError",)),
    ("hospital_mlops.deploy.container_engine", ("ContainerEngineError",)),
    ("hospital_mlops.monitoring.outcomes", ("OutcomesRejected",)),
    ("hospital_mlops.monitoring.feedback", ("FeedbackRejected",)),
    ("hospital_mlops.monitoring.run", ("MonitoringError",)),
    ("hospital_mlops.monitoring.policy", ("MonitoringPolicyError",)),
    ("hospital_mlops.rollout.commands", ("RolloutError",)),
    ("hospital_mlops.rollout.state", ("RolloutStateError",)),
    ("hospital_mlops.rollout.policy", ("RolloutPolicyError",)),
    ("hospital_mlops.rollout.audit", ("AuditLogError",)),
    ("hospital_mlops.rollout.observe", ("ObservationError",)),
    ("hospital_mlops.rollout.gitops", ("ApplyError",)),
    ("hospital_mlops.inference.fallback", ("FallbackPolicyError",)),
    ("hospital_mlops.monitoring.challenger", ("ChallengerError",)),
    ("pipelines.monitoring_runner", ("RecurringRunError",)),
)
REFUSALS = (
    (
        "hospital_mlops.governance.registry",
        ("PromotionRefused", "GoldenMismatch", "ArtifactMismatch", "ModelRetired"),
    ),
    ("hospital_mlops.rollout.commands", ("RolloutRefused",)),
    ("hospital_mlops.rollout.retire", ("RetirementRefused",)),
    ("hospital_mlops.governance.packet", ("PacketError",)),
)


def _loaded(table: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[type[BaseException], ...]:
    return tuple(
        getattr(sys.modules[module], name)
        for module, names in table
        if module in sys.modules
        for name in names
    )


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
    p.add_argument("--no-model", action="store_true", help="stop after publish (data layers only)")
    p.add_argument(
        "--runner", choices=["subprocess", "container"], default="subprocess",
        help="kfp.local's runner: steps as processes of this venv, or in the pipeline image "
        "(DockerRunner; Docker or podman)",
    )  # fmt: skip
    p.add_argument("--image", help="the pipeline image for --runner container (make images)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hmlops", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser(
        "demo", help="the bundled dataset end to end: pipeline, registry, then serve and ask"
    )
    demo.add_argument("--port-base", type=int, default=8080, help="ports for the local servers")
    demo.add_argument("--out", type=Path, default=Path("out/demo"))
    demo.add_argument(
        "--no-story", action="store_true", help="skip the monitoring and rollout story"
    )
    demo.add_argument(
        "--story-pace", choices=["demo", "quick"], default="demo",
        help="the story's compressed time: 30-second windows, or 10-second ones (the tests')",
    )  # fmt: skip

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
    submit.add_argument(
        "--service-account",
        default="hmlops-pipeline-runner",
        help="the runs' identity (kustomize/rbac/pipeline-runner)",
    )
    submit.add_argument(
        "--token-file", type=Path, help="a bearer token for the KFP API (kfp's existing_token)"
    )

    lin = sub.add_parser("lineage", help="print the chain from a run or artifact to its source")
    lin.add_argument(
        "ref", help="run id, artifact sha256 (a unique prefix is enough) or prediction id"
    )
    lin.add_argument("--out", type=Path, default=Path("out/demo"), help="the store directory")
    lin.add_argument("--json", action="store_true")

    cat = sub.add_parser("catalog", help="validate and summarize the data catalog")
    cat.add_argument("--catalog", type=Path)

    syn = sub.add_parser("synthetic", help="generate a synthetic multi-table EHR extract")
    syn.add_argument("--out", type=Path, required=True)
    syn.add_argument("--encounters", type=int, default=20_000)
    syn.add_argument("--seed", type=int, default=7)

    sub.add_parser("scenarios", help="list the named fault scenarios")

    cli_serving.add_parsers(sub)
    cli_monitoring.add_parsers(sub)
    cli_rollout.add_parsers(sub)
    cli_cds.add_parsers(sub)
    cli_governance.add_parsers(sub)
    cli_access.add_parsers(sub)
    cli_keys.add_parsers(sub)

    lic = sub.add_parser("licenses", help="inventory installed licences; flag non-OSI ones")
    lic.add_argument("--out", type=Path, default=Path("out/licenses.csv"), help=".csv or .json")

    reg = sub.add_parser("registry", help="the MLflow model registry: show, sign off, promote")
    rsub = reg.add_subparsers(dest="action", required=True)
    show = rsub.add_parser("show", help="versions, aliases, tags and sign-offs of a model")
    show.add_argument("--model", required=True)
    show.add_argument("--json", action="store_true")
    sign = rsub.add_parser("sign-off", help="record a reviewer's sign-off on a model version")
    sign.add_argument("--model", required=True)
    sign.add_argument("--version", type=int, required=True)
    sign.add_argument("--role", required=True, choices=list(ROLES))
    sign.add_argument("--by", required=True, help="who signs (name and role)")
    sign.add_argument("--note", default="")
    ret = rsub.add_parser(
        "retire", help="take a version out of use for good, keeping its evidence (recorded)"
    )
    ret.add_argument("--model", required=True)
    ret.add_argument("--version", type=int, required=True)
    ret.add_argument("--by", required=True, help="who retires it (name and role)")
    ret.add_argument("--reason", required=True, help="why, for the record (no patient data)")
    ret.add_argument(
        "--withdraw", action="store_true", help="the champion too: the model is withdrawn"
    )
    ret.add_argument("--json", action="store_true")
    prom = rsub.add_parser("promote", help="point an alias (e.g. champion) at a signed-off version")
    prom.add_argument("--model", required=True)
    prom.add_argument("--version", type=int, required=True)
    prom.add_argument("--alias", default="champion")
    cmp_ = rsub.add_parser("compare", help="champion vs challenger on the challenger's test slice")
    cmp_.add_argument("--model", required=True)
    cmp_.add_argument("--champion", default="champion", help="version number or alias")
    cmp_.add_argument("--challenger", default="latest", help="version number, alias or latest")
    cmp_.add_argument("--out", type=Path, default=Path("out/demo"), help="the store directory")
    cmp_.add_argument("--json", action="store_true")
    exp = rsub.add_parser(
        "export", help="write a version as a self-verifying bundle directory (storage path)"
    )
    exp.add_argument("--model", required=True, help="NAME@ALIAS or NAME@VERSION")
    exp.add_argument("--out", type=Path, required=True, help="a new directory")
    ver = rsub.add_parser("verify", help="load a model and check its golden predictions")
    ver.add_argument("--model", required=True)
    ver.add_argument("--ref", default="champion", help="version number or alias")
    return parser


def run_captured(argv: Sequence[str]) -> tuple[int, str, str]:
    """``main`` in this process with its output captured: the exit code, stdout and stderr
    (for callers that run many commands, without an interpreter's and MLflow's start-up each)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    telemetry_off()  # before any command imports MLflow or Great Expectations
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except Exception as exc:
        if isinstance(exc, (UsageError, *_loaded(USAGE_ERRORS))):
            print(f"hmlops: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if isinstance(exc, _loaded(REFUSALS)):
            print(f"hmlops: refused: {exc}", file=sys.stderr)
            return EXIT_GATE_FAILED
        raise


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "demo":
        return _demo(args.out, args.port_base, story=not args.no_story, pace=args.story_pace)
    if args.command == "pipeline":
        if args.action == "run":
            return _pipeline_run(args)
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
    if args.command == "lineage":
        if _is_uuid(args.ref):
            return cli_serving.print_prediction_lineage(args.ref, args.out, args.json)
        from hospital_mlops.data.lineage import LineageStore, format_chain

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
        from hospital_mlops.data.sources.synthetic.parquet_extract import generate_extract

        path = generate_extract(args.out, args.encounters, seed=args.seed)
        print(f"wrote a synthetic extract of {args.encounters} encounters to {path}")
        return 0
    if args.command == "registry":
        return _registry(args)
    if args.command == "licenses":
        return _licenses(args.out)
    if args.command == "serve":
        return cli_serving.serve(args)
    if args.command == "serve-one":
        return cli_serving.serve_one(args)
    if args.command == "deploy":
        return cli_serving.deploy(args)
    if args.command == "monitor":
        return cli_monitoring.dispatch(args)
    if args.command == "rollout":
        return cli_rollout.dispatch(args)
    if args.command == "cds":
        return cli_cds.dispatch(args)
    if args.command in ("governance", "sbom"):
        return cli_governance.dispatch(args)
    if args.command == "access":
        return cli_access.dispatch(args)
    if args.command == "keys":
        return cli_keys.dispatch(args)
    if args.command == "scenarios":
        from hospital_mlops.data.faults import SCENARIOS

        for s in SCENARIOS.values():
            print(
                f"{s.name:18} {'/'.join(sorted(s.sources)):22} caught at {s.caught_at:9} "
                f"{s.description}"
            )
        return 0
    raise UsageError(f"unknown command {args.command}")


def _catalog(path: Path | None) -> int:
    from hospital_mlops.data.catalog import catalog_version, load_catalog

    catalog = load_catalog(path)
    print(f"catalog {catalog.version} (content {catalog_version(catalog)}): valid")
    for name, src in catalog.sources.items():
        tables = ", ".join(f"{t}({len(s.columns)})" for t, s in src.tables.items())
        print(f"- {name}: {src.system}; owner {src.owner}; uses {src.permissible_uses}; {tables}")
    return 0


def _pipeline_run(args: argparse.Namespace) -> int:
    from pipelines.runner import run_locally

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
        train_model=not args.no_model,
        runner=args.runner,
        image=args.image,
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


def _is_uuid(ref: str) -> bool:
    try:
        return str(uuid.UUID(ref)) == ref.lower()
    except ValueError:
        return False


def _licenses(out: Path) -> int:
    from hospital_mlops.governance.licenses import inventory, write_inventory

    records = inventory()
    path = write_inventory(records, out)
    flagged = [r for r in records if r.flag]
    print(f"{len(records)} installed distributions; inventory written to {path}")
    print(f"{len(flagged)} flagged:")
    for r in flagged:
        print(f"  {r.name} {r.version}: {r.licence} ({r.flag}; from {r.evidence})")
    print(
        "alibi and alibi-detect (BSL 1.1) come with the `serving` extra; production use needs a "
        "licence from Seldon, except at non-profit educational institutions (README, 'Data and "
        "licences')."
    )
    return 0


def _registry(args: argparse.Namespace) -> int:
    from hospital_mlops.governance import registry

    if args.action == "export":
        from hospital_mlops.inference.bundle import BundleError, export_bundle, load_bundle

        name, ref = cli_serving.parse_model(args.model)
        try:
            path = export_bundle(name, ref, args.out)
            bundle = load_bundle(path)
        except BundleError as exc:
            raise UsageError(str(exc)) from None
        print(
            f"exported {bundle.name} version {bundle.version} (sha256 {bundle.sha256[:16]}…, "
            f"golden predictions verified) to {path}\n"
            f"  serve it:  hmlops serve-one predictor --model {path} --model-sha256 {bundle.sha256}"
        )
        return 0
    if args.action == "show":
        shown = registry.show(args.model)
        if args.json:
            print(json.dumps(shown, indent=2))
            return 0
        print(f"{shown['name']}:")
        for v in shown["versions"]:
            aliases = f" @{', @'.join(v['aliases'])}" if v["aliases"] else ""
            signed = ", ".join(f"{r} by {s['by']}" for r, s in v["signoffs"].items()) or "none"
            print(
                f"  version {v['version']}{aliases}: gates passed "
                f"{v['tags'].get(registry.GATES_TAG)}; sign-offs: {signed}"
            )
        return 0
    if args.action == "sign-off":
        record = registry.sign_off(args.model, args.version, args.role, args.by, args.note)
        print(f"{args.model} version {args.version}: {args.role} sign-off by {record['by']}")
        return 0
    if args.action == "retire":
        from hospital_mlops.rollout.retire import retire

        done = retire(args.model, args.version, args.by, args.reason, withdraw=args.withdraw)
        if args.json:
            print(json.dumps(done, indent=2))
        else:
            removed = ", ".join(done["aliases_removed"]) or "none"
            print(
                f"{args.model} version {args.version} retired by {done['by']} (aliases removed: "
                f"{removed}); its evidence stays in the registry. Audit decision "
                f"#{done['audit_seq']}."
            )
        return 0
    if args.action == "promote":
        from hospital_mlops.governance.config import load_governance

        required = list(load_governance().required_signoffs)
        done = registry.promote(args.model, args.version, args.alias, required)
        print(f"{args.model} version {args.version} is now @{done['alias']}")
        return 0
    if args.action == "compare":
        compared = registry.compare(args.model, args.champion, args.challenger, args.out)
        if args.json:
            print(json.dumps(compared, indent=2))
        else:
            _print_comparison(compared)
        return 0
    checked = registry.verify_golden(registry.model_uri(args.model, args.ref))
    print(
        f"{checked['model_uri']}: reproduces its {checked['rows']} golden predictions "
        f"(largest difference {checked['max_abs_difference']:.2g})"
    )
    return 0


def _print_comparison(compared: dict[str, Any]) -> None:
    champ, chall = compared["champion"], compared["challenger"]
    print(
        f"{compared['model']}: champion v{champ['version']} ({champ['ref']}) vs challenger "
        f"v{chall['version']} on the challenger's test slice ({compared['rows']:,} encounters, "
        f"{compared['patients']:,} patients)"
    )
    print(f"  {'metric':20} {'champion':>24} {'challenger':>24} {'difference (95% CI)':>28}")
    for metric, diff in compared["challenger_minus_champion"].items():
        a = compared["models"]["champion"][metric]
        b = compared["models"]["challenger"][metric]
        print(
            f"  {metric:20} {a['value']:>24.4f} {b['value']:>24.4f} "
            f"{diff['value']:>+10.4f} ({diff['ci'][0]:+.4f} to {diff['ci'][1]:+.4f})"
        )


def _demo(out: Path, serve_port: int = 8080, story: bool = True, pace: str = "demo") -> int:
    from pipelines.runner import run_locally

    print(
        "hospital-mlops demo: the bundled UCI Diabetes 130-US extract through the Kubeflow "
        "pipeline (kfp.local): data layers, then train → evaluate → gate → register in MLflow, "
        "with the labelled DEMO tokenization key.",
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
    evidence = {e["name"]: e["path"] for e in summary.get("evidence", [])}
    if "validation_report.html" in evidence:
        print(f"  validation report (HTML):           {evidence['validation_report.html']}")
        print(f"  model card + HTI-1 attributes:      {evidence['model_card.html']}")
    print(f"  lineage:  hmlops lineage {summary['run_id']} --out {out}")
    print(f"  compiled pipeline IR:  hmlops pipeline compile --out {out / 'data_pipeline.yaml'}")
    if summary["status"] != "succeeded":
        return EXIT_GATE_FAILED
    model = summary["model"]
    _demo_promote(model["name"], int(model["version"]))
    print(f"  registry:  hmlops registry show --model {model['name']}")
    served = cli_serving.demo_round_trip(f"{model['name']}@champion", out, port_base=serve_port)
    if served != 0:
        return served
    if story:
        from hospital_mlops.cli.demo_story import PACES, run_story

        told = run_story(
            run_captured, model["name"], int(model["version"]), out, out, serve_port, PACES[pace]
        )
        if told != 0:
            return told
    _demo_packet(model["name"], int(model["version"]), out)
    return 0


def _demo_packet(name: str, version: int, out: Path) -> None:
    """The review board's packet for the champion, as `hmlops governance packet` writes it."""
    from hospital_mlops.governance.packet import PacketRequest, build_packet

    path = out / f"governance-{name}-v{version}.zip"
    packet = build_packet(PacketRequest(name, version, path, out))
    print(f"\n=== The governance packet of {name} version {version} ===")
    print(f"{path}: {len(packet.files)} files with their sha256 (index.html opens first)")
    print("what a review board would chase before go-live (the demo's own gaps):")
    for item in packet.missing:
        print(f"  - {item}")
    print(f"  verify it later: hmlops governance verify {path}")


def _demo_promote(name: str, version: int) -> None:
    """Sign off with clearly labelled demo reviewers and promote, so later stages have a
    champion to serve. A hospital does this with its real reviewers (see docs/validation.md)."""
    from hospital_mlops.cli.demo_story import DEMO_REVIEWER
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.config import load_governance

    required = list(load_governance().required_signoffs)
    for role in required:
        registry.sign_off(
            name, version, role, DEMO_REVIEWER, "recorded by `make demo` for the bundled dataset"
        )
    registry.promote(name, version, "champion", required)
    print(
        f"\n{name} version {version}: demo sign-offs by '{DEMO_REVIEWER}' for "
        f"{', '.join(required)}; promoted to @champion."
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
