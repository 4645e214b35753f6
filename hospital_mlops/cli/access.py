"""``hmlops access``: bearer tokens for the local servers, and the access audit (who reached
which prediction, when)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from hospital_mlops.security.api_access import ACCESS_LOG_ENV, TOKENS_FILE_ENV


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    acc = sub.add_parser("access", help="bearer tokens for the local servers; the access audit")
    asub = acc.add_subparsers(dest="action", required=True)
    add = asub.add_parser("add-client", help="make a client's token (shown once; hash kept)")
    add.add_argument("--name", required=True, help="the client, e.g. ward-dashboard")
    add.add_argument(
        "--tokens-file",
        type=Path,
        default=Path(os.environ[TOKENS_FILE_ENV]) if os.environ.get(TOKENS_FILE_ENV) else None,
        required=not os.environ.get(TOKENS_FILE_ENV),
        help=f"the clients file the servers read (default: ${TOKENS_FILE_ENV})",
    )
    audit = asub.add_parser("audit", help="who reached which prediction, when")
    audit.add_argument("--prediction-id", help="only the accesses to this prediction")
    audit.add_argument("--who", help="only this client")
    audit.add_argument("--log", type=Path, help=f"the access log (default: ${ACCESS_LOG_ENV} or "
                       "the state directory's access-audit.jsonl)")  # fmt: skip
    audit.add_argument("--json", action="store_true")


def dispatch(args: argparse.Namespace) -> int:
    if args.action == "add-client":
        from hospital_mlops.security.api_access import add_client

        token = add_client(args.tokens_file, args.name)
        print(f"client {args.name!r} added to {args.tokens_file} (its sha256 only).")
        print("Its token, shown this once (give it to the client; set HMLOPS_API_TOKEN in a")
        print("server that calls another):")
        print(token)
        return 0
    return _audit(args)


def _audit(args: argparse.Namespace) -> int:
    from hospital_mlops.paths import state_dir
    from hospital_mlops.security.api_access import read_access_log

    path = args.log or Path(os.environ.get(ACCESS_LOG_ENV) or state_dir() / "access-audit.jsonl")
    entries = read_access_log(path)
    if args.prediction_id:
        entries = [e for e in entries if args.prediction_id in e["prediction_ids"]]
    if args.who:
        entries = [e for e in entries if e["who"] == args.who]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(f"{path}: {len(entries)} accesses")
    for e in entries:
        ids = ", ".join(e["prediction_ids"][:3]) + (" …" if len(e["prediction_ids"]) > 3 else "")
        print(f"  {e['at']} {e['who']} {e['service']} {e['method']} {e['path']} → "
              f"{e['status']} {ids}")  # fmt: skip
    return 0
