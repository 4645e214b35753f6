"""What the evidence documents are written from: lineage, evaluation and the two configs.

The model card and the HTI-1 attributes read only this. A fact that none of these sources holds
is a human-only field (``config/governance.yaml``); when it is empty the documents say MISSING
and list it, they never invent it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hospital_mlops.features import FeatureSet
from hospital_mlops.governance.config import Governance
from hospital_mlops.use_case import UseCase

MISSING = "MISSING"

# Features that carry one of HTI-1's demographic variables (§170.315(b)(11)(iv)(A)(5)-(13)).
DEMOGRAPHIC_FEATURES = {
    "race": "race",
    "sex_male": "sex",
    "age_years": "date of birth (used only as age at admission, capped at 90)",
}
HTI1_DEMOGRAPHICS = (
    "race",
    "ethnicity",
    "language",
    "sexual orientation",
    "gender identity",
    "sex",
    "date of birth",
    "social determinants of health",
    "health status assessments",
)


def limitations_of(source: str, use_case: UseCase) -> list[str]:
    """The data's limitations (the catalog's, per source), then the use case's own."""
    from hospital_mlops.data.catalog import load_catalog

    return [*load_catalog().source(source).limitations, *use_case.limitations]


@dataclass(frozen=True)
class EvidenceContext:
    source: str
    run_id: str
    use_case: UseCase
    governance: Governance
    feature_set: FeatureSet
    training: dict[str, Any]
    evaluation: dict[str, Any]
    gates: dict[str, Any]
    code_version: dict[str, Any]

    @property
    def limitations(self) -> list[str]:
        return limitations_of(self.source, self.use_case)

    def period(self, name: str) -> dict[str, Any]:
        return next(p for p in self.training["split"] if p["period"] == name)


def or_missing(value: str | None) -> str:
    return value.strip() if value and value.strip() else MISSING


def estimate(e: dict[str, Any], digits: int = 3) -> str:
    if e.get("value") is None:
        return "n/a"
    ci = e.get("ci") or [None, None]
    if ci[0] is None:
        return f"{e['value']:.{digits}f}"
    return f"{e['value']:.{digits}f} (95% CI {ci[0]:.{digits}f}–{ci[1]:.{digits}f})"


def validity_summary(ctx: EvidenceContext) -> str:
    ev = ctx.evaluation
    d, c = ev["discrimination"], ev["calibration"]
    primary = ev["thresholds"][ev["primary_threshold"]]
    test = ctx.period("test")
    return (
        f"Temporal hold-out test slice ({test['rows']:,} encounters, {test['patients']:,} "
        f"patients, event rate {test['event_rate']:.3f}; {test['start']} … {test['end']}): "
        f"AUROC {estimate(d['auroc'])}, AUPRC {estimate(d['auprc'])}; calibration slope "
        f"{estimate(c['slope'], 2)}, intercept {estimate(c['intercept'], 2)}, ECE "
        f"{estimate(c['ece'], 4)}, Brier {estimate(c['brier'], 4)}. At the "
        f"{ev['primary_threshold']} threshold: {estimate(primary['alerts_per_100'], 1)} alerts "
        f"per 100 discharges, sensitivity {estimate(primary['sensitivity'])}, PPV "
        f"{estimate(primary['ppv'])}. Comparator (prior-utilization logistic regression) AUROC "
        f"{estimate(ev['comparator']['auroc'])}. 95% CIs from a patient-cluster bootstrap "
        f"({ev['bootstrap']['replicates']} replicates)."
    )


def fairness_summary(ctx: EvidenceContext) -> str:
    ev = ctx.evaluation
    policy = ctx.use_case.subgroup_policy
    flags = ev["subgroup_flags"]
    parts = []
    for s in ev["subgroups"]:
        if s["group"] == s["reference"] or not s["assessable"]:
            continue
        ratios = ", ".join(f"{m} ratio {estimate(v, 2)}" for m, v in s["ratios"].items())
        parts.append(f"{s['subgroup']}={s['group']} vs {s['reference']}: {ratios}")
    justified = [f for f in flags if f in policy.justifications]
    post_hoc = [j["flag"] for j in ctx.gates.get("justifications", []) if j["post_hoc"]]
    return (
        f"Ratios to the largest group at the {ev['primary_threshold']} threshold, flagged outside "
        f"{policy.ratio_bounds[0]}–{policy.ratio_bounds[1]}: "
        + "; ".join(parts)
        + ". Flags: "
        + (", ".join(flags) if flags else "none")
        + (f" (with written justifications: {', '.join(justified)})" if justified else "")
        + "."
        + (
            f" Justifications written after this evaluation raised the flag (post hoc): "
            f"{', '.join(post_hoc)}."
            if post_hoc
            else ""
        )
    )


def representativeness_summary(ctx: EvidenceContext) -> str:
    shares = ctx.training.get("representativeness", {})
    parts = []
    for name, periods in shares.items():
        train = periods.get("train", {})
        text = ", ".join(f"{g} {v:.1%}" for g, v in sorted(train.items(), key=lambda kv: -kv[1]))
        parts.append(f"{name}: {text}")
    return "Training slice composition: " + "; ".join(parts) + "." if parts else MISSING
