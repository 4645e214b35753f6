"""Lineage: every artifact's manifest is a node; its parents are the artifacts it was made from.

Nodes are stored as ``<store>/lineage/nodes/<sha256>.json`` and runs as
``<store>/lineage/runs/<run_id>.json``. ``walk`` follows parents from any node (or run) back to
the source extract, so a prediction can be traced to the exact rows that trained its model.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class LineageNotFound(LookupError):
    def __str__(self) -> str:
        return str(self.args[0])


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def code_version() -> dict[str, Any]:
    """The git SHA and dirty flag of the code that ran.

    Images have no .git, so the Dockerfile bakes ``HMLOPS_GIT_SHA``/``HMLOPS_GIT_DIRTY`` in.
    """
    if os.environ.get("HMLOPS_GIT_SHA"):
        return {
            "git_sha": os.environ["HMLOPS_GIT_SHA"],
            "dirty": os.environ.get("HMLOPS_GIT_DIRTY", "false").lower() == "true",
        }
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PACKAGE_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        return {"git_sha": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "dirty": True}


@dataclass(frozen=True)
class LineageStore:
    root: Path

    @property
    def nodes(self) -> Path:
        return self.root / "lineage" / "nodes"

    @property
    def runs(self) -> Path:
        return self.root / "lineage" / "runs"

    def record_node(self, manifest: Mapping[str, Any]) -> Path:
        """Record a node. Nodes are immutable: an existing node with the same hash is kept."""
        self.nodes.mkdir(parents=True, exist_ok=True)
        path = self.nodes / f"{manifest['sha256']}.json"
        if not path.exists():
            _atomic_write_json(path, manifest)
        return path

    def record_run(self, run: Mapping[str, Any]) -> Path:
        self.runs.mkdir(parents=True, exist_ok=True)
        path = self.runs / f"{run['run_id']}.json"
        _atomic_write_json(path, run)
        return path

    def node(self, sha_or_prefix: str) -> dict[str, Any]:
        exact = self.nodes / f"{sha_or_prefix}.json"
        if exact.exists():
            return dict(json.loads(exact.read_text()))
        matches = sorted(self.nodes.glob(f"{sha_or_prefix}*.json")) if self.nodes.exists() else []
        if len(matches) == 1:
            return dict(json.loads(matches[0].read_text()))
        if len(matches) > 1:
            raise LineageNotFound(f"{sha_or_prefix!r} is ambiguous: {len(matches)} nodes match")
        raise LineageNotFound(f"no lineage node or run {sha_or_prefix!r} under {self.root}")

    def run(self, run_id: str) -> dict[str, Any] | None:
        path = self.runs / f"{run_id}.json"
        return dict(json.loads(path.read_text())) if path.exists() else None

    def walk(self, start_sha: str) -> Iterator[tuple[int, dict[str, Any]]]:
        """Yield (depth, node) from a node back through its parents, depth-first."""
        stack: list[tuple[int, str]] = [(0, start_sha)]
        seen: set[str] = set()
        while stack:
            depth, sha = stack.pop()
            if sha in seen:
                continue
            seen.add(sha)
            node = self.node(sha)
            yield depth, node
            for parent in reversed(node.get("parents", [])):
                stack.append((depth + 1, parent["sha256"]))

    def chain(self, ref: str) -> list[tuple[int, dict[str, Any]]]:
        """Resolve a run id or an artifact hash (or unique prefix) to its lineage chain."""
        run = self.run(ref)
        if run is not None:
            final = run.get("final_artifact_sha256")
            if not final:
                nodes = run.get("nodes", [])
                if not nodes:
                    raise LineageNotFound(f"run {ref} recorded no artifacts")
                final = nodes[-1]
            return list(self.walk(str(final)))
        return list(self.walk(self.node(ref)["sha256"]))


def _atomic_write_json(path: Path, payload: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def format_chain(chain: list[tuple[int, dict[str, Any]]]) -> str:
    lines = []
    for depth, node in chain:
        kind = node.get("kind", "?")
        desc = node.get("source", "")
        detail = ""
        if kind == "source_extract":
            detail = f" path={node.get('path')}"
        elif "tables" in node:
            rows = sum(int(t.get("rows", 0)) for t in node["tables"].values())
            detail = f" rows={rows}"
        versions = " ".join(
            f"{k}={node[k]}"
            for k in ("catalog_version", "suite_version", "feature_set_version")
            if node.get(k)
        )
        code = node.get("code_version", {})
        code_s = f" git={str(code.get('git_sha', ''))[:10]}{'+dirty' if code.get('dirty') else ''}"
        lines.append(
            f"{'  ' * depth}{'└─ ' if depth else ''}{kind} {node['sha256'][:16]} {desc}{detail}"
            f"{code_s if code else ''} {versions}".rstrip()
        )
    return "\n".join(lines)
