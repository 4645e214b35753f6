"""``hmlops registry``: the MLflow model registry (show, sign off, retire, promote, compare,
export as a bundle, verify the golden predictions)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hospital_mlops.cli import serving as cli_serving
from hospital_mlops.cli.exit_codes import UsageError
from hospital_mlops.governance.config import ROLES


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def dispatch(args: argparse.Namespace) -> int:
    from hospital_mlops.governance import registration, registry

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
        record = registration.sign_off(args.model, args.version, args.role, args.by, args.note)
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
        done = registration.promote(args.model, args.version, args.alias, required)
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
