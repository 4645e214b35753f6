"""What subgroup calibration (subgroup_calibration.py) reports: per window and cell (window ×
break-down × group) the numbers and the band they were judged against, the alerts raised, each
break-down's status, and the rule in words. Cells under the small-cell minimum say only that
they exist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from hospital_mlops.monitoring.subgroup_bands import Band

RULE = (
    "A cell alerts when its observed/expected events' exact Poisson CI lies wholly outside the "
    "group's band, or its ECE less its sampling noise lies above the band's upper end. Bands "
    "come from windows of the same size drawn from the validated (test) period, set so that a "
    "window like that period raises any subgroup alert with probability at most the declared "
    "false-alarm rate (split over groups × 2 statistics)."
)

Status = Literal["run", "not_run"]
WindowStatus = Literal["pending", "not_run", "run"]
CellStatus = Literal["suppressed", "no_outcomes", "no_baseline", "pass", "alert"]


@dataclass(frozen=True)
class CalibrationCell:
    window_start: str
    breakdown: str
    group: str
    status: CellStatus
    n: int | None = None
    n_outcomes: int | None = None
    observed_events: int | None = None
    expected_events: float | None = None
    observed_to_expected: float | None = None
    oe_ci: list[float] | None = None
    ece: float | None = None
    ece_noise: float | None = None
    bins: int | None = None
    band: Band | None = None
    alerts: list[str] = field(default_factory=list)

    @property
    def suppressed(self) -> bool:
        return self.status == "suppressed"

    def as_dict(self) -> dict[str, Any]:
        if self.suppressed:  # that it exists, nothing more
            return {
                "window_start": self.window_start,
                "breakdown": self.breakdown,
                "group": self.group,
                "suppressed": True,
                "status": self.status,
            }
        return {**asdict(self), "suppressed": False}


@dataclass(frozen=True)
class WindowCalibration:
    start: str
    end: str
    matures_at: str  # when its last prediction's outcome horizon has passed
    status: WindowStatus
    reason: str | None
    cells: list[CalibrationCell]

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "matures_at": self.matures_at,
            "status": self.status,
            "reason": self.reason,
            "cells": [c.as_dict() for c in self.cells],
        }


@dataclass(frozen=True)
class SubgroupAlert:
    window_start: str
    breakdown: str
    group: str
    statistic: str  # observed_to_expected_high | observed_to_expected_low | ece
    message: str
    kind: str = "calibration"
    tier: str = "act"  # a demonstrated impact on matured outcomes

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BreakdownStatus:
    breakdown: str
    request_field: str
    column: str
    status: Status
    reason: str | None
    banded_groups: list[str]
    groups_without_band: list[str]  # too few test-period predictions for a band

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SubgroupCalibration:
    status: Status
    reason: str | None
    false_alarm_rate: float
    tests_per_window: int
    per_test_rate: float | None
    ci_level: float
    breakdowns: list[BreakdownStatus]
    windows: list[WindowCalibration]
    alerts: list[SubgroupAlert]
    rule: str = RULE

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reason": self.reason,
            "false_alarm_rate": self.false_alarm_rate,
            "tests_per_window": self.tests_per_window,
            "per_test_rate": self.per_test_rate,
            "ci_level": self.ci_level,
            "rule": self.rule,
            "breakdowns": [b.as_dict() for b in self.breakdowns],
            "windows": [w.as_dict() for w in self.windows],
            "alerts": [a.as_dict() for a in self.alerts],
        }
