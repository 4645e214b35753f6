"""Model gates: the pre-declared criteria a model must meet to become a promotion candidate."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from hospital_mlops.use_case import ModelGates, SubgroupPolicy


@dataclass(frozen=True)
class ModelGate:
    name: str
    passed: bool
    observed: str
    required: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def justification_records(
    flags: list[str], policy: SubgroupPolicy, evaluated_on: date
) -> list[dict[str, str | bool]]:
    """Who justified each flag and when, relative to this evaluation (kept with the gates)."""
    return [
        policy.justifications[f].record(f, evaluated_on)
        for f in flags
        if f in policy.justifications
    ]


def check_model_gates(
    evaluation: dict[str, Any], gates: ModelGates, policy: SubgroupPolicy, evaluated_on: date
) -> list[ModelGate]:
    auroc = evaluation["discrimination"]["auroc"]
    slope = evaluation["calibration"]["slope"]["value"]
    ece = evaluation["calibration"]["ece"]["value"]
    comparator = evaluation["comparator"]
    lo, hi = gates.calibration_slope
    unjustified = [f for f in evaluation["subgroup_flags"] if f not in policy.justifications]
    justified = [f for f in evaluation["subgroup_flags"] if f in policy.justifications]
    post_hoc = [f for f in justified if policy.justifications[f].post_hoc(evaluated_on)]
    out = [
        ModelGate(
            "auroc_lower_bound",
            auroc["ci"][0] is not None and auroc["ci"][0] >= gates.min_auroc_lower_bound,
            f"AUROC {auroc['value']:.3f}, 95% CI lower bound {auroc['ci'][0]:.3f}",
            f"lower bound ≥ {gates.min_auroc_lower_bound}",
        ),
        ModelGate(
            "suspected_leakage",
            auroc["value"] <= gates.max_auroc,
            f"AUROC {auroc['value']:.3f}",
            f"≤ {gates.max_auroc} (higher is treated as suspected leakage)",
        ),
        ModelGate(
            "calibration_slope",
            lo <= slope <= hi,
            f"slope {slope:.3f}",
            f"in [{lo}, {hi}]",
        ),
        ModelGate("ece", ece <= gates.max_ece, f"ECE {ece:.4f}", f"≤ {gates.max_ece}"),
        ModelGate(
            "subgroups_justified",
            not unjustified,
            f"flagged without justification: {unjustified or 'none'}; justified: "
            f"{justified or 'none'}"
            + (f" (written after the evaluation, post hoc: {post_hoc})" if post_hoc else ""),
            "every flagged subgroup ratio has a written justification in use_case.yaml",
        ),
    ]
    if gates.must_beat_comparator:
        margin = comparator["auroc_margin"]
        out.append(
            ModelGate(
                "beats_comparator",
                margin["value"] is not None and margin["value"] > 0,
                f"AUROC margin over comparator {margin['value']:+.3f} "
                f"(95% CI {margin['ci'][0]:+.3f} to {margin['ci'][1]:+.3f})",
                "model AUROC above the comparator's on the test slice",
            )
        )
    return out
