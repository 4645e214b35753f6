"""Read a source extract exactly as the catalog describes it, without interpreting values.

CSV is read as text (types are the raw gate's business); parquet keeps its physical types. An
extract may be a zip, a directory, or (for one-table sources) a single file.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path, PurePosixPath

import pandas as pd
import pyarrow.parquet as pq

from hospital_mlops.data.catalog import SourceSpec, TableSpec
from hospital_mlops.paths import project_root


class ExtractError(FileNotFoundError):
    """The extract is missing, unreadable, or lacks a table the catalog declares."""


def default_extract(source: str, spec: SourceSpec) -> Path:
    if spec.default_extract is None:
        raise ExtractError(
            f"source {source!r} has no default extract in the catalog; give one with --input PATH"
        )
    return project_root() / spec.default_extract


def _read_csv(handle: io.BufferedIOBase | Path, table: TableSpec) -> pd.DataFrame:
    try:
        return pd.read_csv(
            handle,
            dtype=str,
            keep_default_na=False,
            na_values=[*table.na_values, ""],
            engine="c",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def _read_table(path: Path, member: str, spec: SourceSpec, table: TableSpec) -> pd.DataFrame:
    if spec.format == "parquet":
        return pq.read_table(path).to_pandas()
    if path.suffix == ".zip":
        try:
            with zipfile.ZipFile(path) as zf, zf.open(member) as fh:
                return _read_csv(io.BytesIO(fh.read()), table)
        except KeyError as exc:
            raise ExtractError(f"extract {path} has no member {member!r}") from exc
        except zipfile.BadZipFile as exc:
            raise ExtractError(f"extract {path} is not a readable zip file: {exc}") from exc
    return _read_csv(path, table)


def _locate(extract: Path, table: TableSpec, spec: SourceSpec) -> tuple[Path, str]:
    if extract.is_file():
        if extract.suffix == ".zip":
            return extract, table.file
        if len(spec.tables) == 1:
            return extract, table.file
        raise ExtractError(
            f"extract {extract} is a single file but the source has tables {sorted(spec.tables)}; "
            "give a directory or a zip"
        )
    candidates = [extract / table.file, extract / PurePosixPath(table.file).name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate, table.file
    raise ExtractError(f"extract {extract} has no file for table {table.file!r}")


def preflight_extract(extract: Path, spec: SourceSpec) -> None:
    """Cheap checks before a run starts: every table's file exists and opens as its format."""
    if not extract.exists():
        raise ExtractError(f"extract {extract} does not exist")
    for table in spec.tables.values():
        path, member = _locate(extract, table, spec)
        try:
            if spec.format == "parquet":
                pq.read_schema(path)
            elif path.suffix == ".zip":
                with zipfile.ZipFile(path) as zf:
                    zf.getinfo(member)
            else:
                with open(path, "rb") as fh:
                    fh.read(1)
        except KeyError as exc:
            raise ExtractError(f"extract {path} has no member {member!r}") from exc
        except zipfile.BadZipFile as exc:
            raise ExtractError(f"extract {path} is not a readable zip file: {exc}") from exc
        except OSError as exc:
            raise ExtractError(f"extract {path} is not readable: {exc}") from exc
        except Exception as exc:  # pyarrow raises its own types for a corrupt footer
            raise ExtractError(f"extract {path} is not readable as {spec.format}: {exc}") from exc


def read_extract(extract: Path, spec: SourceSpec) -> dict[str, pd.DataFrame]:
    if not extract.exists():
        raise ExtractError(f"extract {extract} does not exist")
    tables: dict[str, pd.DataFrame] = {}
    for name, table in spec.tables.items():
        path, member = _locate(extract, table, spec)
        try:
            tables[name] = _read_table(path, member, spec, table)
        except PermissionError as exc:
            raise ExtractError(f"extract {path} is not readable: {exc.strerror}") from exc
        except (OSError, ValueError) as exc:
            if isinstance(exc, ExtractError):
                raise
            raise ExtractError(f"extract {path} could not be read as {spec.format}: {exc}") from exc
    return tables


def write_csv_extract(tables: dict[str, pd.DataFrame], spec: SourceSpec, out_dir: Path) -> Path:
    """Write tables in the source's CSV layout (used to materialize fault scenarios)."""
    for name, table in spec.tables.items():
        path = out_dir / table.file
        path.parent.mkdir(parents=True, exist_ok=True)
        na_rep = table.na_values[0] if table.na_values else ""
        tables[name].to_csv(path, index=False, na_rep=na_rep)
    return out_dir


def generate_extract(spec: SourceSpec, out_dir: Path, n_encounters: int, seed: int) -> Path:
    """Write a generated source's extract with its catalogued generator; return its path."""
    import importlib

    if not spec.generator:
        raise ValueError("the source is delivered, not generated (no generator in the catalog)")
    module, _, function = spec.generator.partition(":")
    generator = getattr(importlib.import_module(module), function)
    return Path(generator(out_dir, n_encounters, seed=seed))
