from __future__ import annotations

import pandas as pd
import pytest

from hospital_mlops.data.snapshots import (
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
    import hospital_mlops.data.snapshots as snaps

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(snaps, "_fsync_tree", boom)
    with pytest.raises(OSError, match="disk full"):
        write_snapshot(_tables(), tmp_path / "zone", {})
    assert list((tmp_path / "zone").iterdir()) == []


KILL_DURING_PUBLISH = """
import os, signal, sys
from pathlib import Path
import hospital_mlops.data.snapshots as snaps

point = sys.argv[3]
real_rename = os.rename

def rename_then_die(src, dst):
    if point == "after-rename":
        real_rename(src, dst)
    os.kill(os.getpid(), signal.SIGKILL)  # as an OOM kill or a node loss would: no cleanup

snaps.os.rename = rename_then_die
snaps.copy_snapshot(Path(sys.argv[1]), Path(sys.argv[2]))
"""


@pytest.mark.parametrize("point", ["before-rename", "after-rename"])
def test_a_publish_killed_midway_shows_no_partial_snapshot_and_a_rerun_is_identical(
    tmp_path, point: str
) -> None:
    """The publishing process is SIGKILLed with the copy written but not yet renamed into
    place, or just after: readers never see a partial snapshot, and publishing again gives
    the identical content address and bytes."""
    import hashlib
    import subprocess
    import sys

    source, manifest = write_snapshot(_tables(), tmp_path / "features", {"kind": "t"})
    zone = tmp_path / "published"
    killed = subprocess.run(
        [sys.executable, "-c", KILL_DURING_PUBLISH, str(source), str(zone), point],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    final = zone / manifest["sha256"]
    visible = [p.name for p in zone.iterdir() if not p.name.startswith(".")]
    if point == "before-rename":
        assert visible == [] and not final.exists()  # only the hidden staging copy is left
        left = [p.name for p in zone.iterdir()]
        assert len(left) == 1 and left[0].startswith(".staging-")
    else:
        assert visible == [manifest["sha256"]]
        assert verify_snapshot(final)["sha256"] == manifest["sha256"]  # complete, sealed
    again = copy_snapshot(source, zone)
    assert again == final and verify_snapshot(again)["sha256"] == manifest["sha256"]

    def digests(root):
        return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()}  # fmt: skip

    assert digests(again) == digests(source)
