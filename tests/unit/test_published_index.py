"""The publish index survives a writer killed mid-line: readers skip the torn tail, the next
append cuts it off, and concurrent publishers never interleave their lines."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from hospital_mlops.data.published_index import (
    PublishedIndexError,
    append_entry,
    index_path,
    read_entries,
)


def _entry(n: int) -> dict:
    return {"sha256": f"{n:064x}", "source": "diabetes130", "run_id": f"run-{n}"}


def test_a_torn_last_line_is_skipped_then_cut_off(tmp_path: Path, caplog) -> None:
    assert read_entries(tmp_path) == []
    append_entry(tmp_path, _entry(1))
    with index_path(tmp_path).open("ab") as fh:  # a publish killed while writing its line
        fh.write(b'{"sha256": "00ff", "source": "diab')
    assert read_entries(tmp_path) == [_entry(1)]
    with caplog.at_level(logging.WARNING, logger="hospital_mlops.data.published_index"):
        append_entry(tmp_path, _entry(2))
    assert "torn last line" in caplog.text
    assert read_entries(tmp_path) == [_entry(1), _entry(2)]
    assert index_path(tmp_path).read_text().count("\n") == 2


def test_a_damaged_complete_line_is_an_error_naming_it(tmp_path: Path) -> None:
    append_entry(tmp_path, _entry(1))
    with index_path(tmp_path).open("a") as fh:
        fh.write("not json\n")
    with pytest.raises(PublishedIndexError, match=r"index.jsonl line 2 is not a JSON entry"):
        read_entries(tmp_path)


def test_concurrent_publishers_never_interleave(tmp_path: Path) -> None:
    script = (
        "import sys; from pathlib import Path; "
        "from hospital_mlops.data.published_index import append_entry; "
        "[append_entry(Path(sys.argv[1]), {'writer': sys.argv[2], 'n': n, 'pad': 'x' * 3000}) "
        "for n in range(150)]"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), name]) for name in "ab"
    ]
    assert [w.wait(timeout=120) for w in writers] == [0, 0]
    entries = read_entries(tmp_path)
    assert len(entries) == 300
    for name in "ab":
        assert [e["n"] for e in entries if e["writer"] == name] == list(range(150))
