"""The 31 ONC HTI-1 source attributes of a predictive DSI (45 CFR 170.315(b)(11)(iv)(B)),
filled from lineage, evaluation and configuration. Human-only attributes come from
``config/governance.yaml``; an empty one is reported as MISSING and listed, never invented."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hospital_mlops.governance.evidence import (
    DEMOGRAPHIC_FEATURES,
    HTI1_DEMOGRAPHICS,
    MISSING,
    EvidenceContext,
    fairness_summary,
    or_missing,
    representativeness_summary,
    validity_summary,
)

Fill = Callable[[EvidenceContext], str]


@dataclass(frozen=True)
class Attribute:
    number: int
    category: str
    name: str
    origin: str  # where the value comes from: lineage, evaluation, use case, governance
    fill: Fill


def _demographic_inputs(ctx: EvidenceContext) -> str:
    names = {f.name for f in ctx.feature_set.features}
    used = {var: feat for feat, var in DEMOGRAPHIC_FEATURES.items() if feat in names}
    lines = [f"{var}: used (feature `{feat}`)" for var, feat in used.items()]
    covered = {var.split(" (")[0] for var in used}
    lines += [f"{v}: not used" for v in HTI1_DEMOGRAPHICS if v not in covered]
    return "; ".join(lines) + "."


def _inclusion(ctx: EvidenceContext) -> str:
    train = ctx.period("train")
    excluded = "; ".join(ctx.use_case.out_of_scope)
    return (
        f"Encounters of the published feature snapshot {ctx.training['features_sha256'][:16]} "
        f"(feature set {ctx.training['feature_set_version']}), training period "
        f"{train['start']} … {train['end']} ({train['rows']:,} encounters, {train['patients']:,} "
        f"patients); label: {ctx.use_case.label.definition}. Excluded: {excluded}. "
        f"{ctx.training.get('embargoed_rows', 0):,} encounters inside the embargo between "
        "periods were left out so no training label sees a later period."
    )


def _fairness_approach(ctx: EvidenceContext) -> str:
    p = ctx.use_case.subgroup_policy
    groups = ", ".join(ctx.use_case.for_source(ctx.source).subgroups)
    return (
        f"Performance is measured per subgroup ({groups}) with patient-cluster bootstrap CIs; "
        f"ratios of {', '.join(p.metrics)} to the largest group outside "
        f"{p.ratio_bounds[0]}–{p.ratio_bounds[1]} are flagged, and a pre-declared gate blocks "
        "registration of any model with a flag that has no written justification reviewed by "
        "the clinical owner."
    )


def _bias_management(ctx: EvidenceContext) -> str:
    justified = ctx.use_case.subgroup_policy.justifications
    text = (
        "One calibrated risk scale for everyone (calibration is checked within each subgroup via "
        "observed/expected); thresholds are set by alert budget on the validation slice, not per "
        "group; race is an input only as registered and its effect is reported per group. "
    )
    if justified:
        text += "Justified flags: " + "; ".join(
            f"{k}: {v.text} (by {v.by}, written on {v.written_on}, "
            f"{v.relative_to_evaluation} the evaluation)"
            for k, v in justified.items()
        )
    return text


def _human(getter: Callable[[EvidenceContext], str]) -> Fill:
    return lambda ctx: or_missing(getter(ctx))


def _missing_until(what: str) -> Fill:
    return lambda ctx: f"{MISSING}: {what}"


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(1, "Details and output", "Name and contact information for the intervention "
              "developer", "governance", lambda c: f"{c.governance.developer.name}; contact: "
              f"{or_missing(c.governance.developer.contact)}"
              if c.governance.developer.contact.strip() else MISSING),
    Attribute(2, "Details and output", "Funding source of the technical implementation for the "
              "intervention's development", "governance",
              _human(lambda c: c.governance.developer.funding_source)),
    Attribute(3, "Details and output", "Description of value that the intervention produces as "
              "an output", "use case", lambda c: f"A calibrated probability (0–1) of "
              f"{c.use_case.label.definition}, with the alert decision at the "
              f"{c.use_case.thresholds.primary} threshold, reason codes, the model version and "
              "a data-freshness timestamp."),
    Attribute(4, "Details and output", "Whether the output is a prediction, classification, "
              "recommendation, evaluation, analysis, or other", "use case",
              lambda c: "prediction (risk probability), with a thresholded alert"),
    Attribute(5, "Purpose", "Intended use of the intervention", "use case",
              lambda c: c.use_case.intended_use),
    Attribute(6, "Purpose", "Intended patient population(s)", "use case",
              lambda c: c.use_case.intended_population),
    Attribute(7, "Purpose", "Intended user(s)", "use case",
              lambda c: ", ".join(c.use_case.intended_users)),
    Attribute(8, "Purpose", "Intended decision-making role (informs, augments, replaces "
              "clinical management)", "use case", lambda c: c.use_case.decision_role),
    Attribute(9, "Cautioned out-of-scope use", "Tasks, situations or populations where a user "
              "is cautioned against applying the intervention", "use case",
              lambda c: "; ".join(c.use_case.out_of_scope)),
    Attribute(10, "Cautioned out-of-scope use", "Known risks, inappropriate settings, "
              "inappropriate uses, or known limitations", "governance + lineage",
              lambda c: " ".join([c.governance.risk_assessment, *c.limitations])),
    Attribute(11, "Development details and input features", "Exclusion and inclusion criteria "
              "that influenced the training data set", "lineage", _inclusion),
    Attribute(12, "Development details and input features", "Use of race, ethnicity, language, "
              "sexual orientation, gender identity, sex, date of birth, social determinants of "
              "health and health status assessments as input features", "feature set",
              _demographic_inputs),
    Attribute(13, "Development details and input features", "Demographic representativeness "
              "of the training data (at least the variables used as input features)",
              "lineage", representativeness_summary),
    Attribute(14, "Development details and input features", "Relevance of training data to the "
              "intended deployed setting", "governance",
              _human(lambda c: c.governance.relevance_to_deployed_setting)),
    Attribute(15, "Fairness in development", "Approach taken to ensure the output is fair",
              "use case", _fairness_approach),
    Attribute(16, "Fairness in development", "Approaches to manage, reduce or eliminate bias",
              "use case", _bias_management),
    Attribute(17, "External validation", "Data source, clinical setting or environment of an "
              "external validity and fairness assessment", "governance",
              _human(lambda c: c.governance.external_validation.data_source)),
    Attribute(18, "External validation", "Party that conducted the external testing",
              "governance", _human(lambda c: c.governance.external_validation.party)),
    Attribute(19, "External validation", "Demographic representativeness of the external data",
              "governance", _human(lambda c: c.governance.external_validation.representativeness)),
    Attribute(20, "External validation", "Description of the external validation process",
              "governance", _human(lambda c: c.governance.external_validation.process)),
    Attribute(21, "Quantitative measures of performance", "Validity in test data from the same "
              "source as the training data", "evaluation", validity_summary),
    Attribute(22, "Quantitative measures of performance", "Fairness in test data from the same "
              "source as the training data", "evaluation", fairness_summary),
    Attribute(23, "Quantitative measures of performance", "Validity in data external to the "
              "training source", "governance",
              _missing_until("no external validation has been recorded")),
    Attribute(24, "Quantitative measures of performance", "Fairness in data external to the "
              "training source", "governance",
              _missing_until("no external validation has been recorded")),
    Attribute(25, "Quantitative measures of performance", "References to evaluations of the "
              "intervention's effect on outcomes", "governance",
              lambda c: "; ".join(c.governance.outcome_evaluations) or MISSING),
    Attribute(26, "Ongoing maintenance", "Process and frequency of monitoring the "
              "intervention's validity", "governance",
              _human(lambda c: c.governance.maintenance.validity_monitoring)),
    Attribute(27, "Ongoing maintenance", "Validity of the intervention in local data",
              "monitoring", _missing_until("measured on local data after deployment")),
    Attribute(28, "Ongoing maintenance", "Process and frequency of monitoring the "
              "intervention's fairness", "governance",
              _human(lambda c: c.governance.maintenance.fairness_monitoring)),
    Attribute(29, "Ongoing maintenance", "Fairness of the intervention in local data",
              "monitoring", _missing_until("measured on local data after deployment")),
    Attribute(30, "Update and continued validation", "Process and frequency by which the "
              "intervention is updated", "governance",
              _human(lambda c: c.governance.maintenance.update_process)),
    Attribute(31, "Update and continued validation", "Frequency by which performance is "
              "corrected when validity or fairness risks are identified", "governance",
              _human(lambda c: c.governance.maintenance.correction_frequency)),
)  # fmt: skip


def source_attributes(ctx: EvidenceContext) -> dict[str, Any]:
    """All 31 attributes with their values, and the list of those still missing."""
    rows = []
    for a in ATTRIBUTES:
        value = a.fill(ctx)
        rows.append(
            {
                "number": a.number,
                "category": a.category,
                "attribute": a.name,
                "origin": a.origin,
                "value": value,
                "missing": value.startswith(MISSING),
            }
        )
    return {
        "regulation": "45 CFR 170.315(b)(11)(iv)(B), predictive DSI source attributes",
        "attributes": rows,
        "missing": [r["number"] for r in rows if r["missing"]],
    }
