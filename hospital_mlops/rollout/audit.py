"""The rollout audit log: one JSON line per decision, hash-chained so an edit or a deleted line
is detected.

Each entry records what a governance committee asks about a decision: when, who or what decided,
the inputs (observations and their sources), every gate and rollback criterion with its observed
value and limit, the decision, and the action taken (the GitOps patch written, whether it was
applied to a cluster). Each line carries the sha256 of the line before it and of itself, over
canonical JSON. No PHI goes in: observations are counts and rates.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditLogError(ValueError):
    """The audit log is unreadable or its hash chain is broken."""


def _digest(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (two operators advancing at once must not fork the chain)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_audit(path: Path) -> list[dict[str, Any]]:
    """Every entry, after checking the chain; raises naming the first bad line."""
    if not path.exists():
        return []
    entries: list[dict[str, Any]] = []
    previous = GENESIS
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise AuditLogError(f"audit log {path} line {number}: not JSON") from None
            if not isinstance(entry, dict) or entry.get("prev_sha256") != previous:
                raise AuditLogError(
                    f"audit log {path} line {number}: does not follow line {number - 1} "
                    "(a line was removed, reordered or inserted)"
                )
            if entry.get("sha256") != _digest(entry):
                raise AuditLogError(
                    f"audit log {path} line {number}: its content does not match its sha256 "
                    "(edited after it was written)"
                )
            previous = entry["sha256"]
            entries.append(entry)
    return entries


def append_audit(path: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Append ``entry`` (stamped with ``seq``, ``recorded_at`` and the chain) and return it as
    written. The file is fsync'd before returning: a decision is acted on only once recorded."""
    with _locked(path):
        existing = read_audit(path)
        stamped = {
            "seq": len(existing) + 1,
            "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **entry,
            "prev_sha256": existing[-1]["sha256"] if existing else GENESIS,
        }
        stamped["sha256"] = _digest(stamped)
        line = json.dumps(stamped, sort_keys=True, default=str) + "\n"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    return stamped


def rolled_back_versions(entries: list[dict[str, Any]], model: str) -> set[int]:
    """The model's versions whose last rollout decision left them rolled back."""
    last_phase: dict[int, str] = {}
    for entry in entries:
        state = entry.get("result_state")
        if entry.get("model") == model and entry.get("changed_state") and state:
            last_phase[int(state["candidate_version"])] = str(state["phase"])
    return {v for v, phase in last_phase.items() if phase == "rolled_back"}


def last_action(entries: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The model's last entry that changed its rollout (refusals and plans change nothing)."""
    for entry in reversed(entries):
        if entry.get("model") == model and entry.get("changed_state"):
            return entry
    return None
