"""The settings of subgroup calibration (subgroup_calibration.py): which break-downs, the
window and outcome horizon, the small-cell and outcome minimums, and the declared false-alarm
rate, read from the monitoring policy and checked on construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from hospital_mlops.features.subgroups import GroupMap, text_group_map
from hospital_mlops.model.evaluate.columns import LABEL, SCORE
from hospital_mlops.monitoring.policy import MonitoringPolicy


class SubgroupCalibrationError(ValueError):
    """A setting out of range: a configuration error, raised rather than reported."""


@dataclass(frozen=True)
class CalibrationSettings:
    groups: dict[str, str]  # break-down name → request field
    window_hours: float
    outcome_horizon_days: int
    min_outcomes: int
    small_cell_min: int
    calibration_bins: int
    ci_level: float = 0.95
    seed: int = 0
    false_alarm_rate: float = 0.02  # per matured window, over every subgroup × statistic
    # how a request field and its test-period column become one label: the served feature
    # set's (ServedInputs.group_map); a field not here is compared as text
    maps: Mapping[str, GroupMap] = field(default_factory=dict)

    def group_map(self, request_field: str) -> GroupMap:
        return self.maps.get(request_field) or text_group_map(request_field)

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 0.5:
            raise SubgroupCalibrationError(
                f"false_alarm_rate {self.false_alarm_rate!r}: must be in (0, 0.5), e.g. 0.02"
            )
        if not 0.5 < self.ci_level < 1:
            raise SubgroupCalibrationError(f"ci_level {self.ci_level!r}: must be in (0.5, 1)")
        if self.window_hours <= 0 or self.outcome_horizon_days < 0:
            raise SubgroupCalibrationError("window_hours must be > 0, outcome_horizon_days ≥ 0")
        if self.min_outcomes < 1 or self.small_cell_min < 1 or self.calibration_bins < 1:
            raise SubgroupCalibrationError(
                "min_outcomes, small_cell_min and calibration_bins must be ≥ 1"
            )

    @classmethod
    def from_policy(
        cls,
        policy: MonitoringPolicy,
        false_alarm_rate: float = 0.02,
        maps: Mapping[str, GroupMap] | None = None,
    ) -> CalibrationSettings:
        return cls(
            groups=dict(policy.breakdowns.by),
            window_hours=policy.windows.length_hours,
            outcome_horizon_days=policy.windows.outcome_horizon_days,
            min_outcomes=policy.windows.min_outcomes,
            small_cell_min=policy.breakdowns.small_cell_min,
            calibration_bins=policy.thresholds.calibration_bins,
            ci_level=policy.bootstrap.ci_level,
            seed=policy.bootstrap.seed,
            false_alarm_rate=false_alarm_rate,
            maps=dict(maps or {}),
        )

    def test_period_columns(self) -> list[str]:
        """What this reads of test_predictions.parquet: label, score, one column per group."""
        columns = [self.group_map(f).column for f in self.groups.values()]
        return list(dict.fromkeys([LABEL, SCORE, *columns]))
