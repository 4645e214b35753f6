"""``hmlops licenses``: the licence inventory of the installed distributions, with the ones to
review (not OSI-approved, or not declared) flagged."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lic = sub.add_parser("licenses", help="inventory installed licences; flag non-OSI ones")
    lic.add_argument("--out", type=Path, default=Path("out/licenses.csv"), help=".csv or .json")


def licenses(out: Path) -> int:
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
