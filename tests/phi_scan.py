"""Scan a run's outputs for raw identifiers from the source extract (test helper)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pyarrow.parquet as pq

TEXT_SUFFIXES = {".json", ".jsonl", ".md", ".html", ".yaml", ".yml", ".txt", ".log", ".csv"}
# Short numeric IDs collide with counts and ranks (a 6-digit row rank is not a leak); a real leak
# shows thousands of longer ones, which these lengths still catch.
MIN_NUMERIC_LENGTH = 7
MIN_LENGTH = 6


def raw_identifiers(values: Iterable[object]) -> set[str]:
    ids = {str(v).strip() for v in values if v is not None and str(v) != "nan"}
    return {v for v in ids if len(v) >= (MIN_NUMERIC_LENGTH if v.isdigit() else MIN_LENGTH)}


def scan(
    root: Path, identifiers: set[str], exclude: Iterable[Path] = (), texts: Iterable[str] = ()
):
    """Return (where, value) pairs for every raw identifier found outside ``exclude``."""
    excluded = [p.resolve() for p in exclude]
    hits: list[tuple[str, str]] = []
    token = re.compile(r"[A-Za-z0-9/_-]+")
    names = {i for i in identifiers if " " in i}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(path.resolve().is_relative_to(e) for e in excluded):
            continue
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            for column in table.column_names:
                values = {str(v).strip() for v in table.column(column).to_pylist() if v is not None}
                hits += [(f"{path}:{column}", v) for v in values & identifiers][:5]
        elif path.suffix in TEXT_SUFFIXES or not path.suffix:
            text = path.read_text(errors="replace")
            hits += [(str(path), v) for v in set(token.findall(text)) & identifiers][:5]
            hits += [(str(path), n) for n in names if n in text][:5]
    for i, text in enumerate(texts):
        hits += [(f"text#{i}", v) for v in set(token.findall(text)) & identifiers][:5]
        hits += [(f"text#{i}", n) for n in names if n in text][:5]
    return hits
