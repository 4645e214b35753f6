"""The publish index, ``<store>/published/index.jsonl``: one JSON line per published feature
snapshot, appended by the publish step and read by training, monitoring and the demo.

A process killed while appending can leave a torn last line. Readers ignore a final line with no
newline (it is an entry still being written, or one that never finished: its snapshot directory
is complete either way, the index line is the last step). The next append cuts such a fragment
off before it writes, under an exclusive lock, so a torn entry never swallows the next one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

from hospital_mlops import artifacts

log = logging.getLogger("hospital_mlops.data.published_index")


class PublishedIndexError(ValueError):
    """A complete line of the index is not an entry: the file was edited or damaged."""


def index_path(store: Path) -> Path:
    return artifacts.publish_index(store)


def append_entry(store: Path, entry: dict[str, Any]) -> None:
    """Append one entry durably; a torn line left by a killed writer is cut off first."""
    path = index_path(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, sort_keys=True) + "\n").encode()
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            content = fh.read()
            if content and not content.endswith(b"\n"):
                keep = content.rfind(b"\n") + 1
                fh.truncate(keep)
                log.warning(
                    "%s: cut off a torn last line (%d bytes) left by a publish that was killed "
                    "while writing it; its snapshot is in published/features",
                    path,
                    len(content) - keep,
                )
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_entries(store: Path) -> list[dict[str, Any]]:
    """Every complete entry, oldest first ([] without an index)."""
    path = index_path(store)
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete = lines[:-1]  # the last part has no newline: empty, or torn
    entries = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise PublishedIndexError(
                f"{path} line {number} is not a JSON entry: the index was edited or damaged "
                "(each line is written whole by the publish step)"
            ) from None
        if not isinstance(entry, dict):
            raise PublishedIndexError(f"{path} line {number} is not a JSON object")
        entries.append(entry)
    return entries
