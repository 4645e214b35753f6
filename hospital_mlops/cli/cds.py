"""``hmlops cds``: the CDS Hooks service, and an example request to try it with."""

from __future__ import annotations

import argparse
import json
from typing import Any


class CdsUsageError(ValueError):
    pass


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cds = sub.add_parser("cds", help="the CDS Hooks service: the risk as a card in the EHR")
    csub = cds.add_subparsers(dest="action", required=True)
    serve = csub.add_parser("serve", help="serve the CDS Hooks service on 127.0.0.1")
    serve.add_argument("--port", type=int, default=8091)
    serve.add_argument("--bind", default="127.0.0.1", help="0.0.0.0 inside a pod")
    serve.add_argument(
        "--predictor-url", default="http://127.0.0.1:8080", help="the predictor (http://HOST:PORT)"
    )
    serve.add_argument(
        "--use-case-predictor",
        action="append",
        default=[],
        metavar="USE_CASE=URL",
        help="the predictor of a further use case's services (repeatable); services of a use "
        "case without one are not offered",
    )
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="accept calls without a client JWT (a local trial only; never with real data)",
    )
    example = csub.add_parser(
        "example", help="print a valid hook request built from example FHIR data"
    )
    example.add_argument(
        "--hook",
        choices=["encounter-discharge", "encounter-start"],
        default="encounter-discharge",
        help="encounter-start: at admission (only the patient and encounters, still in progress)",
    )
    example.add_argument(
        "--scenario",
        choices=["complete", "sparse", "unmapped"],
        default="complete",
        help="complete record; no labs, procedures or medications sent; codes the mapping lacks",
    )
    example.add_argument("--seed", type=int, default=7, help="which real encounter to build from")


def dispatch(args: argparse.Namespace) -> int:
    if args.action == "serve":
        from hospital_mlops.cli.ports import check_port
        from serving.cds_service import serve_cds

        check_port(args.port)
        predictors = {}
        for given in args.use_case_predictor:
            case, sep, url = given.partition("=")
            if not sep or not case or not url:
                raise CdsUsageError(f"--use-case-predictor {given!r}: give USE_CASE=URL")
            predictors[case] = url
        try:
            serve_cds(
                args.port,
                args.predictor_url,
                args.bind,
                insecure_no_auth=args.insecure_no_auth,
                use_case_predictors=predictors,
            )
        except ValueError as exc:
            raise CdsUsageError(str(exc)) from None
        return 0
    print(json.dumps(example_request(args.scenario, args.seed, args.hook), indent=2))
    return 0


def example_request(
    scenario: str = "complete", seed: int = 7, hook: str = "encounter-discharge"
) -> dict[str, Any]:
    """A hook call for a real test-period encounter of the bundled extract, its FHIR data in
    one ``bundle`` prefetch key. At ``encounter-start`` the bundle holds what exists at
    admission: the patient and the encounters (this one in progress, earlier ones)."""
    from hospital_mlops.ehr.fhir_examples import admission_bundle, example_bundle

    bundle = example_bundle(scenario, seed)
    if hook == "encounter-start":
        bundle = admission_bundle(bundle)
    return {
        "hook": hook,
        "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
        "context": {
            "userId": "Practitioner/example",
            "patientId": "example-patient",
            "encounterId": "example-encounter",
        },
        "prefetch": {"bundle": bundle},
    }
