"""``hmlops``: the one command-line entry point.

Errors a user can act on (a bad catalog, a missing extract or key, a refused use) print one clear
line to stderr and exit 2; a failed gate exits 1 with its summary. Nothing prints a stack trace
for an expected failure.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from hospital_mlops.cli import access as cli_access
from hospital_mlops.cli import batch as cli_batch
from hospital_mlops.cli import cds as cli_cds
from hospital_mlops.cli import data as cli_data
from hospital_mlops.cli import defaults as cli_defaults
from hospital_mlops.cli import demo as cli_demo
from hospital_mlops.cli import governance as cli_governance
from hospital_mlops.cli import keys as cli_keys
from hospital_mlops.cli import licenses as cli_licenses
from hospital_mlops.cli import monitoring as cli_monitoring
from hospital_mlops.cli import pipeline as cli_pipeline
from hospital_mlops.cli import registry as cli_registry
from hospital_mlops.cli import rollout as cli_rollout
from hospital_mlops.cli import serving as cli_serving
from hospital_mlops.cli.exit_codes import EXIT_GATE_FAILED, EXIT_USAGE, UsageError
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
    ("hospital_mlops.governance.registry", ("RegistryUnavailable", "RegistryError")),
    ("hospital_mlops.governance.registration", ("RegistrationFailed",)),
    ("hospital_mlops.governance.compare", ("CompareError",)),
    ("hospital_mlops.governance.ml_bom", ("ModelNotRegistered",)),
    ("hospital_mlops.cli.serving", ("ServeUsageError",)),
    ("hospital_mlops.inference.batch", ("BatchError",)),
    ("hospital_mlops.inference.worklist", ("WorklistError",)),
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
    ("hospital_mlops.governance.fhir_model_card", ("ModelCardUnavailable",)),
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
    ("hospital_mlops.data.snapshots", ("SnapshotIntegrityError",)),
)


def _loaded(table: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[type[BaseException], ...]:
    return tuple(
        getattr(sys.modules[module], name)
        for module, names in table
        if module in sys.modules
        for name in names
    )


class _Parser(argparse.ArgumentParser):
    """Resolves the defaults read from the configuration (cli/defaults.py) after parsing, so
    every caller of ``build_parser().parse_args`` gets the same arguments ``main`` does."""

    def parse_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed = super().parse_args(args, namespace)
        cli_defaults.fill(parsed)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hmlops", description=__doc__)
    # the commands are plain parsers: only the top one resolves the defaults, once
    sub = parser.add_subparsers(dest="command", required=True, parser_class=argparse.ArgumentParser)
    # in this order: it is the order ``hmlops --help`` lists the commands in
    cli_demo.add_parsers(sub)
    cli_pipeline.add_parsers(sub)
    cli_data.add_parsers(sub)
    cli_serving.add_parsers(sub)
    cli_batch.add_parsers(sub)
    cli_monitoring.add_parsers(sub)
    cli_rollout.add_parsers(sub)
    cli_cds.add_parsers(sub)
    cli_governance.add_parsers(sub)
    cli_access.add_parsers(sub)
    cli_keys.add_parsers(sub)
    cli_licenses.add_parsers(sub)
    cli_registry.add_parsers(sub)
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
    try:
        # inside: a default read from a broken configuration is one clear line too
        args = build_parser().parse_args(argv)
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
        return cli_demo.demo(
            args.out,
            run_captured,
            args.port_base,
            story=not args.no_story,
            pace=args.story_pace,
            use_cases=not args.readmission_only,
        )
    if args.command == "pipeline":
        return cli_pipeline.dispatch(args)
    if args.command in cli_data.COMMANDS:
        return cli_data.dispatch(args)
    if args.command == "registry":
        return cli_registry.dispatch(args)
    if args.command == "licenses":
        return cli_licenses.licenses(args.out)
    if args.command == "serve":
        return cli_serving.serve(args)
    if args.command == "batch":
        return cli_batch.dispatch(args)
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
    raise UsageError(f"unknown command {args.command}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
