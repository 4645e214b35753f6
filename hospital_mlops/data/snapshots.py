"""Immutable, content-addressed snapshots of tables.

A snapshot is a directory of parquet tables plus ``manifest.json``. Its address is the sha256 of
its tables' bytes (never of the manifest, which carries times), so a rerun on the same inputs
yields the same address. Snapshots are written to a temporary directory and renamed into place:
a reader never sees a half-written snapshot.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST = "manifest.json"
TABLES_DIR = "tables"
_CHUNK = 1 << 20


class SnapshotIntegrityError(RuntimeError):
    """A snapshot's bytes no longer match its address: it was altered after it was written."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: Path) -> str:
    """The sha256 of a file, or of a directory (hash of its files' relative paths and hashes)."""
    if path.is_file():
        return sha256_file(path)
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return combine_hashes({str(p.relative_to(path)): sha256_file(p) for p in files})


def combine_hashes(parts: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(parts):
        digest.update(f"{name}\0{parts[name]}\n".encode())
    return digest.hexdigest()


def write_parquet(df: pd.DataFrame, path: Path) -> str:
    """Write a table with deterministic bytes and return its sha256."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    pq.write_table(table, path, compression="zstd", write_statistics=True)
    return sha256_file(path)


def write_tables(tables: Mapping[str, pd.DataFrame], directory: Path) -> dict[str, dict[str, Any]]:
    """Write tables under ``directory/tables`` and describe each (rows, columns, sha256)."""
    tdir = directory / TABLES_DIR
    tdir.mkdir(parents=True, exist_ok=True)
    described: dict[str, dict[str, Any]] = {}
    for name in sorted(tables):
        df = tables[name]
        digest = write_parquet(df, tdir / f"{name}.parquet")
        described[name] = {"rows": len(df), "columns": list(map(str, df.columns)), "sha256": digest}
    return described


def tables_address(described: Mapping[str, Mapping[str, Any]]) -> str:
    return combine_hashes({name: str(info["sha256"]) for name, info in described.items()})


def read_tables(directory: Path, names: list[str] | None = None) -> dict[str, pd.DataFrame]:
    tdir = directory / TABLES_DIR
    wanted = names or sorted(p.stem for p in tdir.glob("*.parquet"))
    return {n: pq.read_table(tdir / f"{n}.parquet").to_pandas() for n in wanted}


def read_manifest(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / MANIFEST).read_text(encoding="utf-8")))


def verify_snapshot(directory: Path) -> dict[str, Any]:
    """Re-hash every table and compare with the manifest; return the manifest when intact."""
    manifest = read_manifest(directory)
    for name, info in manifest["tables"].items():
        actual = sha256_file(directory / TABLES_DIR / f"{name}.parquet")
        if actual != info["sha256"]:
            raise SnapshotIntegrityError(
                f"snapshot {directory} table {name!r}: sha256 {actual[:12]}… does not match the "
                f"manifest's {str(info['sha256'])[:12]}…; the snapshot was altered after writing"
            )
    if tables_address(manifest["tables"]) != manifest["sha256"]:
        raise SnapshotIntegrityError(f"snapshot {directory}: address does not match its tables")
    return manifest


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())


def _make_read_only(directory: Path) -> None:
    ro = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    for path in directory.rglob("*"):
        if path.is_file():
            path.chmod(ro)


def _seal(staging: Path, final: Path) -> None:
    """Make a fully written staging directory durable, read-only and visible in one rename."""
    _fsync_tree(staging)
    _make_read_only(staging)
    os.rename(staging, final)


def write_snapshot(
    tables: Mapping[str, pd.DataFrame],
    zone: Path,
    manifest_fields: Mapping[str, Any],
) -> tuple[Path, dict[str, Any]]:
    """Write an immutable snapshot into ``zone/<sha256>/`` atomically and return (path, manifest).

    If a snapshot with the same address exists it is verified and reused: content addressing makes
    a rerun a no-op rather than a second copy.
    """
    zone.mkdir(parents=True, exist_ok=True)
    staging = zone / f".staging-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        manifest = write_snapshot_at(tables, staging, manifest_fields)
        final = zone / manifest["sha256"]
        if final.exists():
            existing = verify_snapshot(final)
            shutil.rmtree(staging)
            return final, existing
        _seal(staging, final)
        return final, manifest
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def write_snapshot_at(
    tables: Mapping[str, pd.DataFrame], directory: Path, manifest_fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Write a snapshot into a directory the caller owns (a KFP output artifact) and return its
    manifest. The orchestrator makes that directory visible only after the step succeeds."""
    directory.mkdir(parents=True, exist_ok=True)
    described = write_tables(tables, directory)
    manifest = {"sha256": tables_address(described), **manifest_fields, "tables": described}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def copy_snapshot(source: Path, zone: Path) -> Path:
    """Publish an existing snapshot directory into ``zone`` atomically, verifying it first."""
    manifest = verify_snapshot(source)
    final = zone / manifest["sha256"]
    if final.exists():
        verify_snapshot(final)
        return final
    zone.mkdir(parents=True, exist_ok=True)
    staging = zone / f".staging-{uuid.uuid4().hex}"
    try:
        shutil.copytree(source, staging)
        verify_snapshot(staging)
        _seal(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
