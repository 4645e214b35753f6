"""The vocabulary of gates: a check to run, and what a gate found. Pure; no GX import."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, Field

Layer = str  # "ingest" | "validate" | "features" | "publish"


@dataclass(frozen=True)
class Check:
    """One expectation against one batch (a table, or one lab code of a long table)."""

    batch: str
    expectation: str  # GX expectation class name, e.g. "ExpectColumnValuesToBeBetween"
    kwargs: dict[str, Any]
    purpose: str
    # Identifier columns: never echo sample values into reports.
    sensitive: bool = False
    columns: tuple[str, ...] = field(default=())

    @property
    def column(self) -> str | None:
        col = self.kwargs.get("column")
        if col is not None:
            return str(col)
        if self.columns:
            return ",".join(self.columns)
        return None


def suite_version(checks: Sequence[Check]) -> str:
    """A content hash of a suite: any change to what is checked changes the version."""
    canonical = json.dumps([asdict(c) for c in checks], sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class GateFailure(BaseModel):
    source: str
    layer: str
    table: str
    column: str | None
    expectation: str
    observed: str
    purpose: str
    expected: str


class CheckOutcome(BaseModel):
    table: str
    column: str | None
    expectation: str
    purpose: str
    success: bool
    observed: str


class GateResult(BaseModel):
    source: str
    layer: str
    name: str
    success: bool
    suite_version: str
    checks_run: int
    failures: list[GateFailure] = Field(default_factory=list)
    outcomes: list[CheckOutcome] = Field(default_factory=list)
    rows: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0

    def headline(self) -> str:
        if self.success:
            return f"{self.name}: passed {self.checks_run} checks on {self.source}"
        first = self.failures[0]
        more = f" (+{len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return (
            f"{self.name} FAILED for source {self.source!r} at layer {self.layer!r}: "
            f"{first.table}.{first.column or '*'} {first.expectation} — {first.purpose}; "
            f"expected {first.expected}; observed {first.observed}{more}"
        )


class GateFailed(RuntimeError):
    """A gate failed: nothing downstream of it may run or publish."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.headline())
        self.result = result
