from __future__ import annotations

import pandas as pd
import pytest

from hospital_mlops.snapshots import (
    SnapshotIntegrityError,
    copy_snapshot,
    verify_snapshot,
    write_snapshot,
)


def _tables() -> dict[str, pd.DataFrame]:
    return {"a": pd.DataFrame({"x": [1, 2, 3], "y": ["p", "q", None]})}


def test_same_content_same_address_and_rerun_is_a_noop(tmp_path) -> None:
    one, m1 = write_snapshot(_tables(), tmp_path / "zone", {"kind": "t", "created_at": "1"})
    two, m2 = write_snapshot(_tables(), tmp_path / "zone", {"kind": "t", "created_at": "2"})
    assert one == two and m1["sha256"] == m2["sha256"] == one.name
    assert m2["created_at"] == "1"  # the first snapshot is kept, not overwritten
    _other, m3 = write_snapshot(
        {"a": pd.DataFrame({"x": [1, 2, 4], "y": ["p", "q", None]})}, tmp_path / "zone", {}
    )
    assert m3["sha256"] != m1["sha256"]
    assert not [p for p in (tmp_path / "zone").iterdir() if p.name.startswith(".staging")]


def test_snapshots_are_read_only_and_tampering_is_detected(tmp_path) -> None:
    path, _ = write_snapshot(_tables(), tmp_path / "zone", {})
    table = path / "tables" / "a.parquet"
    assert oct(table.stat().st_mode & 0o777) == "0o444"
    table.chmod(0o644)
    table.write_bytes(table.read_bytes() + b"x")
    with pytest.raises(SnapshotIntegrityError, match="altered after writing"):
        verify_snapshot(path)
    with pytest.raises(SnapshotIntegrityError):
        copy_snapshot(path, tmp_path / "published")
    assert not (tmp_path / "published").exists() or not any((tmp_path / "published").iterdir())


def test_a_failed_write_leaves_nothing_visible(tmp_path, monkeypatch) -> None:
    import hospital_mlops.snapshots as snaps

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(snaps, "_fsync_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(_tables(), tmp_path / "zone", {})
    assert list((tmp_path / "zone").iterdir()) == []
