"""``hmlops keys``: the HMAC keyring's ids, and the steps of a key rotation (crosswalk, rekey,
translate). Keys are never printed: only their ids (a fingerprint of each key)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hospital_mlops.cli.defaults import SOURCE_HELP

DEFAULT_STORE = Path("out/demo")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="HMAC key ids and key rotation (crosswalk, rekey)")
    ksub = keys.add_subparsers(dest="action", required=True)
    show = ksub.add_parser("show", help="the current and previous key ids (never the keys)")
    show.add_argument("--json", action="store_true")

    cross = ksub.add_parser(
        "crosswalk", help="old → new token pairs, built from the ingest layer's raw snapshots"
    )
    cross.add_argument("--source", help=SOURCE_HELP)
    cross.set_defaults(source_default=True)
    cross.add_argument("--out", type=Path, default=DEFAULT_STORE, help="the store directory")
    cross.add_argument("--from-key-id", help="the previous key (default: the only one)")
    cross.add_argument("--json", action="store_true")

    rekey = ksub.add_parser(
        "rekey", help="rewrite the prediction log's tokens from the previous key to the current"
    )
    rekey.add_argument("--out", type=Path, default=DEFAULT_STORE, help="the store directory")
    rekey.add_argument("--from-key-id", help="the previous key (default: the only one)")
    rekey.add_argument(
        "--log-url",
        action="append",
        default=[],
        help="a prediction log's SQLAlchemy URL (repeat; default: the configured one)",
    )
    rekey.add_argument("--json", action="store_true")

    tr = ksub.add_parser("translate", help="a token made with an earlier key → today's token")
    tr.add_argument("tokens", nargs="+")
    tr.add_argument("--namespace", default="encounter_token")
    tr.add_argument("--out", type=Path, default=DEFAULT_STORE, help="the store directory")
    tr.add_argument("--from-key-id", required=True, help="the key id that made the tokens")
    tr.add_argument("--json", action="store_true")


def _previous_id(keyring: Any, chosen: str | None) -> str:
    from hospital_mlops.security.key_rotation import KeyRotationError

    ids = [k.key_id for k in keyring.previous]
    if chosen:
        keyring.by_id(chosen)
        return chosen
    if len(ids) != 1:
        raise KeyRotationError(
            "a rotation step needs the previous key: set HMLOPS_HMAC_PREVIOUS_KEY (or "
            "HMLOPS_HMAC_PREVIOUS_KEY_FILE)"
            if not ids
            else f"several previous keys ({', '.join(ids)}): name one with --from-key-id"
        )
    return ids[0]


def dispatch(args: argparse.Namespace) -> int:
    from hospital_mlops.data.normalize import load_hmac_keyring

    if args.action == "translate":
        return _translate(args)
    keyring = load_hmac_keyring()
    if args.action == "show":
        shown = {
            "current": keyring.current.key_id,
            "previous": [k.key_id for k in keyring.previous],
        }
        if args.json:
            print(json.dumps(shown))
        else:
            print(f"current key id:  {shown['current']}")
            print(f"previous key ids: {', '.join(shown['previous']) or 'none'}")
        return 0
    old = keyring.by_id(_previous_id(keyring, args.from_key_id))
    if args.action == "crosswalk":
        return _crosswalk(args, old, keyring.current)
    return _rekey(args, old.key_id, keyring.current.key_id)


def _crosswalk(args: argparse.Namespace, old: Any, new: Any) -> int:
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.security.key_rotation import build_crosswalk, write_crosswalk

    spec = load_catalog().source(args.source)
    crosswalk = write_crosswalk(
        build_crosswalk(args.out, args.source, spec, old, new), args.out, args.source
    )
    counts = crosswalk.pairs["namespace"].value_counts().to_dict()
    if args.json:
        print(json.dumps({"path": str(crosswalk.path), "old_key_id": old.key_id,
                          "new_key_id": new.key_id, "raw_snapshots": list(crosswalk.raw_snapshots),
                          "pairs": {str(k): int(v) for k, v in counts.items()}}))  # fmt: skip
        return 0
    print(f"crosswalk {old.key_id} → {new.key_id} from {len(crosswalk.raw_snapshots)} raw "
          f"snapshot(s) of {args.source}: {crosswalk.path}")  # fmt: skip
    for namespace, n in sorted(counts.items()):
        print(f"  {namespace}: {n} token pairs")
    print("next: hmlops keys rekey (the prediction log), then rerun the pipeline with the new key")
    return 0


def _rekey(args: argparse.Namespace, old_id: str, new_id: str) -> int:
    from hospital_mlops.inference.prediction_log import PredictionLog, default_url
    from hospital_mlops.security.key_rotation import find_crosswalk, rekey_prediction_log

    crosswalk = find_crosswalk(args.out, old_id, new_id)
    results = {}
    for url in args.log_url or [default_url()]:
        log = PredictionLog(url)  # its schema, as the servers keep it
        try:
            results[_safe(url)] = rekey_prediction_log(log.engine, crosswalk).as_dict()
        finally:
            log.close()
    if args.json:
        print(json.dumps({"crosswalk": str(crosswalk.path), "logs": results}))
        return 0
    for url, counts in results.items():
        print(
            f"{url}: {counts['predictions']} prediction(s) and {counts['outcomes']} outcome(s) "
            f"rekeyed {old_id} → {new_id}; {counts['already_current']} token(s) already "
            f"current, {counts['unknown']} unknown to the crosswalk (left as they were)"
        )
    return 0


def _safe(url: str) -> str:
    """A URL for output, without its password."""
    import sqlalchemy as sa

    return sa.make_url(url).render_as_string(hide_password=True)


def _translate(args: argparse.Namespace) -> int:
    from hospital_mlops.data.normalize import load_hmac_key
    from hospital_mlops.security.key_rotation import KeyRotationError, find_crosswalk, translate

    current = load_hmac_key().key_id
    if args.from_key_id == current:
        raise KeyRotationError(f"{current} is the current key: its tokens need no translation")
    crosswalk = find_crosswalk(args.out, args.from_key_id, current)
    found = translate(crosswalk, args.namespace, args.tokens)
    if args.json:
        print(json.dumps(found))
    else:
        for old, new in found.items():
            print(f"{old} → {new or 'unknown to the crosswalk'}")
    return 0 if all(found.values()) else 1
