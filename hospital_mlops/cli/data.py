"""``hmlops lineage``, ``catalog``, ``synthetic`` and ``scenarios``: the data commands (the chain
from a run, artifact or prediction to its source; the catalog checked and summarized; a
synthetic extract written; the fault scenarios listed)."""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path

from hospital_mlops.cli import serving as cli_serving
from hospital_mlops.cli.exit_codes import UsageError

COMMANDS = ("lineage", "catalog", "generate", "scenarios")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    lin = sub.add_parser("lineage", help="print the chain from a run or artifact to its source")
    lin.add_argument(
        "ref", help="run id, artifact sha256 (a unique prefix is enough) or prediction id"
    )
    lin.add_argument("--out", type=Path, default=Path("out/demo"), help="the store directory")
    lin.add_argument("--json", action="store_true")

    cat = sub.add_parser("catalog", help="validate and summarize the data catalog")
    cat.add_argument("--catalog", type=Path)

    syn = sub.add_parser(
        "generate", help="write a generated source's seeded extract (its catalog generator)"
    )
    syn.add_argument(
        "--source", help="a catalogued source with a generator (default: the only one there is)"
    )
    syn.add_argument("--out", type=Path, required=True)
    syn.add_argument("--encounters", type=int, default=20_000)
    syn.add_argument("--seed", type=int, default=7)

    sub.add_parser("scenarios", help="list the named fault scenarios")


def _generate(source: str | None, out: Path, encounters: int, seed: int) -> int:
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.sources.extract import generate_extract

    sources = load_catalog().sources
    generated = sorted(name for name, spec in sources.items() if spec.generator)
    if source is None:
        if len(generated) != 1:
            raise UsageError(f"give --source: the generated sources are {', '.join(generated)}")
        source = generated[0]
    if source not in generated:
        raise UsageError(
            f"--source {source!r}: not a generated source (catalogued with a generator: "
            f"{', '.join(generated) or 'none'})"
        )
    path = generate_extract(sources[source], out, encounters, seed)
    print(f"wrote a generated {source} extract of {encounters} encounters to {path}")
    return 0


def dispatch(args: argparse.Namespace) -> int:
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
    if args.command == "generate":
        return _generate(args.source, args.out, args.encounters, args.seed)
    from hospital_mlops.data.faults import SCENARIOS  # scenarios: the last of COMMANDS

    for s in SCENARIOS.values():
        print(
            f"{s.name:18} {'/'.join(sorted(s.sources)):22} caught at {s.caught_at:9} "
            f"{s.description}"
        )
    return 0


def _catalog(path: Path | None) -> int:
    from hospital_mlops.data.catalog import catalog_version, load_catalog

    catalog = load_catalog(path)
    print(f"catalog {catalog.version} (content {catalog_version(catalog)}): valid")
    for name, src in catalog.sources.items():
        tables = ", ".join(f"{t}({len(s.columns)})" for t, s in src.tables.items())
        print(f"- {name}: {src.system}; owner {src.owner}; uses {src.permissible_uses}; {tables}")
    return 0


def _is_uuid(ref: str) -> bool:
    try:
        return str(uuid.UUID(ref)) == ref.lower()
    except ValueError:
        return False
