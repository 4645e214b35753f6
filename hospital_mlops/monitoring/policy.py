"""``config/monitoring.yaml``: windows, thresholds and the owner of each kind of alert."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model, validated_override
from hospital_mlops.drift.alerts import check_tiers
from hospital_mlops.drift.data_faults import FaultRules
from hospital_mlops.paths import config_path

AlertKind = Literal[
    "data_drift",
    "data_fault",
    "score_drift",
    "performance",
    "calibration",
    "alert_burden",
    "workflow",
]


class MonitoringPolicyError(ValueError):
    pass


class Windows(StrictModel):
    length_hours: float = Field(gt=0, le=24 * 366)
    min_predictions: int = Field(ge=1)
    min_outcomes: int = Field(ge=10)
    outcome_horizon_days: int = Field(ge=1, le=365)
    feedback_hours: float = Field(gt=0, le=24 * 30)
    feedback_expected: bool
    min_judged_alerts: int = Field(ge=1)
    silent_after: int = Field(ge=1)  # consecutive quiet windows that make a silent feed


class Bootstrap(StrictModel):
    replicates: int = Field(ge=20, le=5000)
    seed: int = 0
    ci_level: float = Field(gt=0.5, lt=1)


class MonitoringThresholds(StrictModel):
    score_drift_p_value: float = Field(gt=0, lt=0.5)
    auroc_drop: float = Field(gt=0, lt=0.5)
    ece_max: float = Field(gt=0, lt=0.5)
    calibration_bins: int = Field(ge=2, le=50)
    observed_to_expected: tuple[float, float]
    # how often a well-calibrated model may raise a calibration alert in a window by chance
    calibration_false_alarm_rate: float = Field(gt=0, lt=0.5)
    alerts_per_100_change: float = Field(gt=0, le=10)
    override_rate_max: float = Field(gt=0, le=1)
    acknowledgement_rate_min: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> MonitoringThresholds:
        low, high = self.observed_to_expected
        if not 0 < low < 1 < high:
            raise ValueError("observed_to_expected must be [low, high] with 0 < low < 1 < high")
        return self


class FaultLimits(StrictModel):
    """The act tier's fixed data-fault rules (hospital_mlops/drift/data_faults.py)."""

    all_missing_share: float = Field(gt=0, le=1)
    new_category_share: float = Field(gt=0, le=1)
    unit_factor: float = Field(gt=1)
    out_of_range_share: float = Field(gt=0, le=1)
    silent_share: float = Field(gt=0, lt=1)
    refused_share: float = Field(gt=0, le=1)
    repeated_share: float = Field(gt=0, le=1)

    def rules(self) -> FaultRules:
        return FaultRules(**self.model_dump())


class DriftAlerting(StrictModel):
    """The served inputs' alerts: thresholds calibrated on the validated period at a declared
    false-alarm rate per window, and which statistic belongs to which tier."""

    false_alarm_rate: float = Field(gt=0, lt=0.5)
    tiers: dict[str, Literal["investigate", "act"]]
    faults: FaultLimits

    @model_validator(mode="after")
    def _every_statistic_in_a_tier(self) -> DriftAlerting:
        check_tiers(self.tiers)
        return self


class Feedback(StrictModel):
    override_reasons: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> Feedback:
        if len(set(self.override_reasons)) != len(self.override_reasons):
            raise ValueError("override_reasons must be distinct")
        if any(not r.strip() or len(r) > 200 for r in self.override_reasons):
            raise ValueError("each override reason is 1-200 characters")
        return self


class RetrainingPolicy(StrictModel):
    """When monitoring starts retraining, and what a retrained challenger must show on the
    recent window before anyone may start its rollout."""

    on_critical_alerts: tuple[Literal["performance", "calibration"], ...]
    data_drift_windows: int = Field(ge=1)
    max_model_age_days: int = Field(ge=1)
    comparison_window_days: int = Field(ge=1, le=365)
    challenger_max_auroc_loss: float = Field(ge=0, lt=0.5)


class Breakdowns(StrictModel):
    """Per-window break-downs: name → the request field that holds the group."""

    small_cell_min: int = Field(ge=1)
    by: dict[str, str]

    def check_fields(self, request_fields: set[str], model: str) -> None:
        """Every break-down names a field the monitored model's requests carry (each model has
        its own inputs, so this is checked against the model, when it is known)."""
        unknown = {name: field for name, field in self.by.items() if field not in request_fields}
        if unknown:
            raise MonitoringPolicyError(
                f"monitoring policy break-downs {unknown} name fields the requests of {model} do "
                f"not carry; they have {', '.join(sorted(request_fields))}"
            )


class SubgroupCalibrationPolicy(StrictModel):
    """Each matured window's O/E and ECE per break-down subgroup, judged against the subgroup's
    band from the validated period at this per-window false-alarm rate (shared over subgroups)."""

    false_alarm_rate: float = Field(gt=0, lt=0.5)


class MonitoringPolicy(StrictModel):
    baseline: Literal["registry"]
    windows: Windows
    bootstrap: Bootstrap
    thresholds: MonitoringThresholds
    drift: DriftAlerting
    feedback: Feedback
    owners: dict[AlertKind, str]
    retraining: RetrainingPolicy
    breakdowns: Breakdowns
    subgroup_calibration: SubgroupCalibrationPolicy
    # Each further use case's differences from the policy above, by use case id (its outcome's
    # horizon, its break-downs, ...): merged over it, the use case's own policy (for_use_case).
    use_cases: dict[str, dict[str, Any]] = Field(default_factory=dict)

    def for_use_case(self, use_case: str, source: Path | str = "") -> MonitoringPolicy:
        """The policy a use case's models are monitored under: this one, with its differences
        (``source``: the file they came from, for the error)."""
        if use_case not in self.use_cases:
            return self
        return validated_override(
            self.model_copy(update={"use_cases": {}}),
            self.use_cases[use_case],
            source or "(loaded)",
            f"use_cases.{use_case}",
            MonitoringPolicyError,
            "monitoring policy",
        )

    @model_validator(mode="after")
    def _every_kind_owned(self) -> MonitoringPolicy:
        unowned = sorted(set(AlertKind.__args__) - set(self.owners))  # type: ignore[attr-defined]
        if unowned:
            raise ValueError(f"every kind of alert needs an owner; missing: {', '.join(unowned)}")
        return self


def load_monitoring_policy(path: Path | str | None = None) -> MonitoringPolicy:
    """The policy file, each use case's differences checked at load: its id declared in
    config/use_case.yaml, and the policy they make valid."""
    from hospital_mlops.use_case import load_use_cases

    where = Path(path) if path else config_path("monitoring.yaml")
    policy = load_yaml_model(where, MonitoringPolicy, MonitoringPolicyError, "monitoring policy")
    declared = load_use_cases()
    for use_case in policy.use_cases:
        if use_case not in declared:
            raise MonitoringPolicyError(
                f"monitoring policy {where} is invalid:\n  use_cases.{use_case}: no such use "
                f"case in config/use_case.yaml ({', '.join(declared)})"
            )
    for case in declared.values():
        horizon = policy.for_use_case(case.id, where).windows.outcome_horizon_days
        if horizon < case.label.window_days:
            key = f"use_cases.{case.id}.windows" if case.id in policy.use_cases else "windows"
            raise MonitoringPolicyError(
                f"monitoring policy {where} is invalid:\n  {key}.outcome_horizon_days: "
                f"{horizon} is shorter than use case {case.id}'s label window "
                f"({case.label.window_days} days): its outcomes would be judged before they "
                "can be known"
            )
    return policy
