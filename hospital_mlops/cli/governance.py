"""``hmlops governance packet|verify`` and ``hmlops sbom``: what a review board, a privacy
officer and a security reviewer each ask for, one command each."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_CHANGED = 1
EXIT_STRICT = 3


class GovernanceUsageError(ValueError):
    pass


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gov = sub.add_parser("governance", help="the governance packet of a model version")
    gsub = gov.add_subparsers(dest="action", required=True)
    packet = gsub.add_parser(
        "packet", help="bundle use case, data, evidence, review, policies, sign-offs, SBOM"
    )
    packet.add_argument("--model", required=True)
    packet.add_argument("--version", type=int, required=True)
    packet.add_argument("--out", type=Path, required=True, help="the packet zip to write")
    packet.add_argument(
        "--store", type=Path, default=Path("out/demo"), help="the pipeline's store directory"
    )
    packet.add_argument(
        "--test-results",
        type=Path,
        nargs="+",
        help="JUnit XML files of the test suites, read together: the controls' results "
        "(default: every out/test-results*.xml, which `make test` and `make test-cluster` write)",
    )
    packet.add_argument("--pip-audit", type=Path, help="pip-audit JSON report (`make audit`)")
    packet.add_argument("--json", action="store_true")
    packet.add_argument(
        "--strict",
        action="store_true",
        help=f"exit {EXIT_STRICT} when anything is missing, or a review item failed or did not run",
    )
    fhir = gsub.add_parser(
        "fhir",
        help="the version's model card as FHIR R4 (HL7 AI Transparency on FHIR): a Bundle of "
        "DocumentReference, Device, Organization and Provenance",
    )
    fhir.add_argument("--model", required=True)
    fhir.add_argument("--version", type=int, required=True)
    fhir.add_argument("--out", type=Path, required=True, help="the Bundle's JSON file to write")
    verify = gsub.add_parser("verify", help="re-check every file of a packet against its manifest")
    verify.add_argument("packet", type=Path)
    verify.add_argument("--json", action="store_true")

    sbom = sub.add_parser("sbom", help="write a CycloneDX SBOM of this environment")
    sbom.add_argument("--out", type=Path, default=Path("out/sbom.cdx.json"))
    sbom.add_argument(
        "--model", help="also the registered model (an ML-BOM modelCard component): its name"
    )
    sbom.add_argument("--version", type=int, help="the registered model's version (with --model)")


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "sbom":
        from hospital_mlops.governance.sbom import write_sbom

        if (args.model is None) != (args.version is None):
            raise GovernanceUsageError("--model and --version go together (one registered version)")
        model = (args.model, args.version) if args.model else None
        summary = write_sbom(args.out, model=model)
        print(
            f"CycloneDX {summary['spec_version']} SBOM of {summary['components']} components "
            f"(schema-validated): {summary['path']}"
        )
        if summary.get("model"):
            print(f"with {summary['model']} as a machine-learning-model component (modelCard)")
        print(f"licences not OSI-approved: {', '.join(summary['not_osi_approved']) or 'none'}")
        print(
            f"licences not declared in metadata: {', '.join(summary['licence_unknown']) or 'none'}"
        )
        return 0
    if args.action == "packet":
        return _packet(args)
    if args.action == "fhir":
        return _fhir(args)
    return _verify(args.packet, args.json)


def _fhir(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from hospital_mlops.governance.fhir_model_card import (
        IG_VERSION,
        ModelCardUnavailable,
        fhir_problems,
        model_card_bundle,
        registered_card,
    )

    bundle = model_card_bundle(registered_card(args.model, args.version), datetime.now(UTC))
    problems = fhir_problems(bundle)
    if problems:  # a bug of ours, never a half-valid document handed to an EHR
        raise ModelCardUnavailable(f"the Bundle is not valid FHIR: {problems[0]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(f".{args.out.name}.partial")
    partial.write_text(json.dumps(bundle, indent=2) + "\n", encoding="utf-8")
    partial.replace(args.out)  # whole or not at all
    document = bundle["entry"][0]["resource"]
    print(
        f"model card of {args.model} version {args.version} as FHIR R4 (AI Transparency on FHIR "
        f"{IG_VERSION}): DocumentReference ({document['docStatus']}), Device, Organization, "
        f"Provenance: {args.out}"
    )
    return 0


def _packet(args: argparse.Namespace) -> int:
    from hospital_mlops.governance.packet import PacketRequest, build_packet

    if args.test_results is None:
        results = tuple(sorted(Path("out").glob("test-results*.xml")))
    else:
        absent = [str(p) for p in args.test_results if not p.exists()]
        if absent:
            raise GovernanceUsageError(f"--test-results {', '.join(absent)} does not exist")
        results = tuple(args.test_results)
    if args.pip_audit is not None and not args.pip_audit.exists():
        raise GovernanceUsageError(f"--pip-audit {args.pip_audit} does not exist")
    packet = build_packet(
        PacketRequest(args.model, args.version, args.out, args.store, results, args.pip_audit)
    )
    if args.json:
        print(json.dumps(packet.as_dict(), indent=2))
    else:
        print(f"governance packet of {args.model} version {args.version}: {packet.path}")
        print(f"  {len(packet.files)} files, each listed with its sha256 in MANIFEST.json")
        print(f"  review items failed: {', '.join(packet.review_failed) or 'none'}")
        print(f"  review items not run: {', '.join(packet.review_not_run) or 'none'}")
        print(f"  missing or needing attention ({len(packet.missing)}):")
        for item in packet.missing:
            print(f"    - {item}")
        print(f"  check it later: hmlops governance verify {packet.path}")
    if args.strict and (packet.missing or packet.review_failed or packet.review_not_run):
        return EXIT_STRICT
    return 0


def _verify(path: Path, as_json: bool) -> int:
    from hospital_mlops.governance.packet import verify_packet

    result = verify_packet(path)
    if as_json:
        print(json.dumps({
            "path": str(path), "ok": result.ok, "model": result.model, "version": result.version,
            "checked": result.checked, "altered": result.altered, "missing": result.missing,
            "added": result.added, "error": result.error,
        }, indent=2))  # fmt: skip
    elif result.ok:
        print(f"{path}: all {result.checked} files match the manifest "
              f"({result.model} version {result.version})")  # fmt: skip
    else:
        out = sys.stderr
        print(f"{path}: DOES NOT match its manifest", file=out)
        if result.error:
            print(f"  {result.error}", file=out)
        for label, names in (("altered", result.altered), ("missing", result.missing),
                             ("added (not in the manifest)", result.added)):  # fmt: skip
            for name in names:
                print(f"  {label}: {name}", file=out)
    return 0 if result.ok else EXIT_CHANGED
