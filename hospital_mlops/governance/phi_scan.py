"""Scan what the system produced for raw identifiers from the source extract.

Used by the tests (a whole demo run must show none) and by the governance packet's privacy
review. It reads every text file, every Parquet column, every SQLite table (so MLflow's params,
tags and metrics, the prediction and feedback logs, the drift store and the audit log are all
covered) and zip members, and matches whole tokens against the identifier values. A database
elsewhere (PostgreSQL on a cluster) is read table by table through its URL (``scan_database``).
"""

from __future__ import annotations

import re
import sqlite3
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

TEXT_SUFFIXES = {
    ".json", ".jsonl", ".md", ".html", ".yaml", ".yml", ".txt", ".log", ".csv", ".xml", ".py",
}  # fmt: skip
SQLITE_SUFFIXES = {".sqlite", ".db", ".sqlite3"}
# Short numeric IDs collide with counts and ranks (a 6-digit row rank is not a leak); a real leak
# shows thousands of longer ones, which these lengths still catch.
MIN_NUMERIC_LENGTH = 7
MIN_LENGTH = 6
HITS_PER_PLACE = 5
# A token starts at a boundary, and never right after "<digit>.": the fraction of a decimal
# number (a request timing in milliseconds, printed to nine places) is not an identifier, while
# an identifier written as a float (an ID column read as floats) is caught by its integer part.
# No example digits here: this file ships with the model's code, which the scans read.
_TOKEN = re.compile(r"(?<![A-Za-z0-9_-])(?<!\d\.)[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Hit:
    where: str  # file, file:column, file:table.column or zip!member
    value: str


def raw_identifiers(values: Iterable[object]) -> set[str]:
    """The identifier values long enough to be told apart from ordinary numbers and words."""
    ids = {str(v).strip() for v in values if v is not None and str(v) != "nan"}
    return {v for v in ids if len(v) >= (MIN_NUMERIC_LENGTH if v.isdigit() else MIN_LENGTH)}


def _in_text(text: str, identifiers: set[str], names: set[str]) -> list[str]:
    found = sorted(set(_TOKEN.findall(text)) & identifiers)
    found += sorted(n for n in names if n in text)
    return found[:HITS_PER_PLACE]


def _sqlite_values(path: Path) -> Iterator[tuple[str, str]]:
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with sqlite3.connect(uri, uri=True) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # names from sqlite_master
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    if isinstance(value, str | int) and not isinstance(value, bool):
                        yield f"{table}.{column}", str(value)
                    elif isinstance(value, bytes):
                        yield f"{table}.{column}", value.decode(errors="replace")


def _database_values(url: str) -> Iterator[tuple[str, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url, hide_parameters=True)
    try:
        metadata = sa.MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                rows = conn.execution_options(stream_results=True).execute(table.select())
                for row in rows:
                    for column, value in zip(table.columns.keys(), row, strict=True):
                        if isinstance(value, str | int) and not isinstance(value, bool):
                            yield f"{table.name}.{column}", str(value)
                        elif isinstance(value, bytes):
                            yield f"{table.name}.{column}", value.decode(errors="replace")
    finally:
        engine.dispose()


def _scan_values(values: Iterable[tuple[str, str]], identifiers: set[str], place: str) -> list[Hit]:
    names = {i for i in identifiers if " " in i}
    hits: dict[str, list[str]] = {}
    for where, text in values:
        if len(hits.get(where, [])) >= HITS_PER_PLACE:
            continue
        found = _in_text(text, identifiers, names)
        if found:
            hits.setdefault(where, []).extend(found)
    return [Hit(f"{place}:{w}", v) for w, vs in hits.items() for v in vs[:HITS_PER_PLACE]]


def scan_sqlite(path: Path, identifiers: set[str]) -> list[Hit]:
    return _scan_values(_sqlite_values(path), identifiers, str(path))


def scan_database(url: str, identifiers: set[str]) -> list[Hit]:
    """Every table of a database a SQLAlchemy URL names (PostgreSQL on a cluster: the prediction
    log, feedback, outcomes, drift results). Hits name the database without its password."""
    import sqlalchemy as sa

    place = sa.engine.make_url(url).render_as_string(hide_password=True)
    return _scan_values(_database_values(url), identifiers, place)


def scan_file(path: Path, identifiers: set[str]) -> list[Hit]:
    names = {i for i in identifiers if " " in i}
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        table = pq.read_table(path)
        hits = []
        for column in table.column_names:
            values = {str(v).strip() for v in table.column(column).to_pylist() if v is not None}
            hits += [Hit(f"{path}:{column}", v) for v in sorted(values & identifiers)][:5]
        return hits
    if suffix in SQLITE_SUFFIXES:
        return scan_sqlite(path, identifiers)
    if suffix == ".zip":
        hits = []
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                text = archive.read(member).decode(errors="replace")
                hits += [Hit(f"{path}!{member}", v) for v in _in_text(text, identifiers, names)]
        return hits
    if suffix in TEXT_SUFFIXES or not suffix:
        text = path.read_text(errors="replace")
        return [Hit(str(path), v) for v in _in_text(text, identifiers, names)]
    return []


def scan(
    root: Path, identifiers: set[str], exclude: Iterable[Path] = (), texts: Iterable[str] = ()
) -> list[tuple[str, str]]:
    """Return (where, value) pairs for every raw identifier found under ``root`` outside
    ``exclude`` and in the given texts (e.g. captured logs)."""
    excluded = [p.resolve() for p in exclude]
    hits: list[Hit] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(path.resolve().is_relative_to(e) for e in excluded):
            continue
        hits += scan_file(path, identifiers)
    names = {i for i in identifiers if " " in i}
    for i, text in enumerate(texts):
        hits += [Hit(f"text#{i}", v) for v in _in_text(text, identifiers, names)]
    return [(h.where, h.value) for h in hits]


def scan_texts(texts: dict[str, str], identifiers: set[str]) -> list[tuple[str, str]]:
    """(where, value) for identifiers found in named texts (e.g. MLflow params and tags)."""
    names = {i for i in identifiers if " " in i}
    return [(w, v) for w, t in texts.items() for v in _in_text(t, identifiers, names)]


def source_identifiers(source: str) -> set[str] | None:
    """The raw identifier values of a catalogued source's bundled extract, or None when that
    extract is not readable here (a hospital's packet host need not hold raw data)."""
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.sources.extract import default_extract, read_extract

    spec = load_catalog().source(source)
    try:
        tables = read_extract(default_extract(source, spec), spec)
    except (OSError, ValueError, LookupError):
        return None
    found: set[str] = set()
    for table, frame in tables.items():
        columns = spec.tables[table].columns
        for column in spec.identifier_columns(table):
            if column in frame and columns[column].identifier == "direct":
                found |= raw_identifiers(frame[column])
    return found
