"""The model card, in the sections of the CHAI Applied Model Card (v0.2 schema element names),
as JSON, as CHAI XML and as a self-contained HTML page. Filled from the same evidence context
as the HTI-1 attributes; human-only fields left empty read MISSING."""

from __future__ import annotations

import html
import json
import re
import xml.etree.ElementTree as ET
from typing import Any

from hospital_mlops.governance.evidence import (
    DEMOGRAPHIC_FEATURES,
    MISSING,
    EvidenceContext,
    fairness_summary,
    or_missing,
    representativeness_summary,
    validity_summary,
)
from hospital_mlops.render.page import page
from hospital_mlops.render.text import breakable

CHAI_NAMESPACE = "https://mc.chai.org/v0.2/schema.xsd"


def _metric(label: str, e: dict[str, Any], unit: str = "") -> dict[str, str]:
    value: dict[str, Any] = {"kind": "estimate_ci", "estimate": e["value"], "level": 95}
    if e.get("ci") and e["ci"][0] is not None:
        value.update({"lower": e["ci"][0], "upper": e["ci"][1]})
    else:
        value = {"kind": "single", "value": e["value"]}
    if unit:
        value["unit"] = unit
    return {"Label": label, "ValueJson": json.dumps(value)}


def card(ctx: EvidenceContext) -> dict[str, Any]:
    uc, gov, ev, tr = ctx.use_case, ctx.governance, ctx.evaluation, ctx.training
    primary = ev["thresholds"][ev["primary_threshold"]]
    test, train = ctx.period("test"), ctx.period("train")
    inputs = ", ".join(f.clinical_wording for f in ctx.feature_set.features)
    demographic = [
        f"{var} (as `{feat}`)"
        for feat, var in DEMOGRAPHIC_FEATURES.items()
        if feat in {f.name for f in ctx.feature_set.features}
    ]
    flags = ev["subgroup_flags"]
    gates = uc.for_source(ctx.source).gates
    return {
        "BasicInfo": {
            "ModelName": f"{uc.title} ({ctx.feature_set.name})",
            "ModelDeveloper": gov.developer.name,
            "DeveloperContact": or_missing(gov.developer.contact),
        },
        "ReleaseInfo": {
            "ReleaseStage": or_missing(gov.release.stage),
            "ReleaseDate": str(tr.get("created_at", MISSING))[:10],
            "ReleaseVersion": f"model {tr['model_sha256'][:16]} (run {ctx.run_id})",
            "GlobalAvailability": or_missing(gov.release.global_availability),
            "RegulatoryApproval": or_missing(gov.release.regulatory_approval),
        },
        "ModelSummary": {
            "Summary": (
                f"Predicts {uc.label.definition}, {uc.prediction_time}. Gradient-boosted trees "
                "(XGBoost) calibrated with Platt scaling on a later validation period; trained "
                f"on {train['rows']:,} encounters and tested on a later period of "
                f"{test['rows']:,}. Test AUROC {ev['discrimination']['auroc']['value']:.3f}."
            ),
            "Keywords": "; ".join(
                (uc.label.name.replace("_", " "), "risk prediction", "decision support")
            ),
        },
        "UsesAndDirections": {
            "IntendedUseAndWorkflow": uc.intended_use,
            "PrimaryIntendedUsers": ", ".join(uc.intended_users),
            "HowToUse": (
                f"Review patients whose risk is at or above the {uc.thresholds.primary} threshold "
                f"({primary['threshold']:.3f}; about {primary['alerts_per_100_declared']:g} "
                "alerts per 100 discharges) and read the reason codes. The score informs the "
                f"team's judgement ({uc.decision_role}); it never replaces it."
            ),
            "TargetedPatientPopulation": uc.intended_population,
            "CautionedOutOfScopeSettings": "; ".join(uc.out_of_scope),
        },
        "Warnings": {
            "KnownRisksAndLimitations": " ".join([gov.risk_assessment, *ctx.limitations]),
            "KnownBiasesOrEthicalConsiderations": fairness_summary(ctx),
            "ClinicalRiskLevel": or_missing(gov.clinical_risk_level),
        },
        "TrustIngredients": {
            "AISystemFacts": {
                "OutcomesAndOutputs": (
                    f"Calibrated probability of {uc.label.definition}; alert at the "
                    f"{uc.thresholds.primary} threshold; reason codes in clinical wording."
                ),
                "ModelType": (
                    f"XGBoost {tr['params'].get('objective')} (max depth "
                    f"{tr['params'].get('max_depth')}, {tr['best_iteration'] + 1} trees, early "
                    "stopping on validation), Platt calibration."
                ),
                "InputDataSource": (
                    f"Source '{ctx.source}' through the validated data pipeline; feature snapshot "
                    f"{tr['features_sha256']}."
                ),
                "OutputAndInputDataTypes": (
                    f"Inputs (feature set {tr['feature_set_version']}): {inputs}. Demographic "
                    f"inputs: {', '.join(demographic) or 'none'}. Output: probability 0–1."
                ),
                "DevelopmentDataCharacterization": (
                    f"Training {train['start']} … {train['end']}: {train['rows']:,} encounters, "
                    f"{train['patients']:,} patients, event rate {train['event_rate']:.3f}. "
                    + representativeness_summary(ctx)
                ),
                "BiasMitigationApproaches": (
                    "Subgroup evaluation with bootstrap CIs; ratios outside the declared bounds "
                    "block registration unless justified in writing; one calibrated scale and "
                    "one alert budget for all groups."
                ),
                "OngoingMaintenance": or_missing(gov.maintenance.validity_monitoring),
                "Security": (
                    "Identifiers are tokenized (keyed HMAC-SHA256) before features are built; no "
                    "identifier reaches the model registry or the evidence."
                ),
                "Transparency": (
                    "Evidence packet with sha256 hashes in the registry; every number is "
                    "recomputable from the saved test predictions; lineage to the source extract."
                ),
            },
            "TransparencyInformation": {
                "FundingSource": or_missing(gov.developer.funding_source),
                "StakeholdersConsulted": or_missing(gov.stakeholders_consulted),
            },
        },
        "KeyMetrics": {
            "UsefulnessUsabilityEfficacy": {
                "MetricGoal": (
                    f"Discriminate and calibrate on a later period; AUROC CI lower bound ≥ "
                    f"{gates.min_auroc_lower_bound}, above the "
                    "comparator."
                ),
                "Results": [
                    _metric("AUROC", ev["discrimination"]["auroc"]),
                    _metric("AUPRC", ev["discrimination"]["auprc"]),
                    _metric("Comparator AUROC", ev["comparator"]["auroc"]),
                    _metric("Sensitivity at threshold", primary["sensitivity"]),
                    _metric("PPV at threshold", primary["ppv"]),
                    _metric("Alerts per 100 discharges", primary["alerts_per_100"]),
                ],
                "Interpretation": validity_summary(ctx),
                "TestType": "Retrospective temporal hold-out (internal)",
                "TestingDataDescription": (
                    f"{test['start']} … {test['end']}: {test['rows']:,} encounters, "
                    f"{test['patients']:,} patients ({test.get('patients_also_in_train', 0):,} "
                    "also in training)."
                ),
                "ValidationProcessAndJustification": (
                    "Time-based split with an embargo of at least the label window; thresholds "
                    "fixed on validation; patient-cluster bootstrap; see docs/validation.md."
                ),
            },
            "FairnessEquity": {
                "MetricGoal": (
                    f"Subgroup ratios of {', '.join(uc.subgroup_policy.metrics)} within "
                    f"{uc.subgroup_policy.ratio_bounds[0]}–{uc.subgroup_policy.ratio_bounds[1]}"
                    " of the largest group, or a written justification."
                ),
                "Results": [
                    _metric(f"{s['subgroup']}={s['group']} {m} ratio", v)
                    for s in ev["subgroups"]
                    for m, v in s["ratios"].items()
                    if s["assessable"] and v.get("value") is not None
                ],
                "Interpretation": "Flags: " + (", ".join(flags) if flags else "none"),
                "TestType": "Retrospective temporal hold-out (internal)",
                "TestingDataDescription": "The same test slice, by subgroup.",
                "ValidationProcessAndJustification": "fairlearn MetricFrame; bootstrap CIs.",
            },
            "SafetyReliability": {
                "MetricGoal": (
                    f"Calibration slope in {list(gates.calibration_slope)}, ECE ≤ {gates.max_ece}."
                ),
                "Results": [
                    _metric("Calibration slope", ev["calibration"]["slope"]),
                    _metric("Calibration intercept", ev["calibration"]["intercept"]),
                    _metric("ECE", ev["calibration"]["ece"]),
                    _metric("Brier score", ev["calibration"]["brier"]),
                ],
                "Interpretation": "Risks can be read as probabilities when these hold.",
                "TestType": "Retrospective temporal hold-out (internal)",
                "TestingDataDescription": "The same test slice.",
                "ValidationProcessAndJustification": "Logistic recalibration; equal-mass bins.",
            },
        },
        "Resources": {
            "EvaluationReferences": "validation_report.html (this evidence packet)",
            "PeerReviewedPublications": "; ".join(gov.outcome_evaluations) or MISSING,
            "PatientConsentOrDisclosure": or_missing(gov.patient_consent_or_disclosure),
        },
    }


def missing_fields(document: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += missing_fields(value, path + ".")
        elif isinstance(value, str) and value.startswith(MISSING):
            out.append(path)
    return out


def card_xml(document: dict[str, Any]) -> str:
    """The card as a CHAI Applied Model Card XML instance (v0.2 element names)."""
    ET.register_namespace("", CHAI_NAMESPACE)

    def add(parent: ET.Element, name: str, value: Any) -> None:
        if isinstance(value, dict):
            node = ET.SubElement(parent, f"{{{CHAI_NAMESPACE}}}{name}")
            for k, v in value.items():
                add(node, k, v)
        elif isinstance(value, list):
            node = ET.SubElement(parent, f"{{{CHAI_NAMESPACE}}}{name}")
            for item in value:
                add(node, "MetricResult", item)
        else:
            ET.SubElement(parent, f"{{{CHAI_NAMESPACE}}}{name}").text = str(value)

    root = ET.Element(f"{{{CHAI_NAMESPACE}}}AppliedModelCard")
    for key, value in document.items():
        add(root, key, value)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def card_html(document: dict[str, Any], attributes: dict[str, Any]) -> str:
    esc = html.escape

    def key(name: str) -> str:
        # a CHAI element name (DevelopmentDataCharacterization) may break between its words
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "<wbr>", esc(name))

    def render(value: Any) -> str:
        if isinstance(value, dict):
            rows = "".join(
                f"<tr><th>{key(k)}</th><td>{render(v)}</td></tr>" for k, v in value.items()
            )
            return f"<table>{rows}</table>"
        if isinstance(value, list):
            return "<ul>" + "".join(f"<li>{render(v)}</li>" for v in value) + "</ul>"
        text = str(value)
        cls = ' class="missing"' if text.startswith(MISSING) else ""
        return f"<span{cls}>{breakable(text)}</span>"

    sections = "".join(f"<h2>{esc(k)}</h2>{render(v)}" for k, v in document.items())
    missing = missing_fields(document)
    hti_rows = "".join(
        f"<tr><td>{a['number']}</td><td>{esc(a['category'])}</td><td>{esc(a['attribute'])}</td>"
        f"<td>{render(a['value'])}</td><td>{esc(a['origin'])}</td></tr>"
        for a in attributes["attributes"]
    )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#1d2733}"
        "table{border-collapse:collapse;margin:.4em 0;width:100%}td,th{border:1px solid #ccd;"
        "padding:.3em .5em;text-align:left;vertical-align:top}th{background:#f1f3f7;width:16em}"
        ".missing{color:#a1161b;font-weight:600}"
    )
    return page(
        "Model card",
        "<h1>Model card (CHAI Applied Model Card sections)"
        f"</h1><p>Human-only fields still missing ({len(missing)}): "
        f"{esc(', '.join(missing)) or 'none'}</p>{sections}"
        f"<h2>ONC HTI-1 predictive DSI source attributes (31)</h2>"
        f"<p>Missing: {esc(', '.join(map(str, attributes['missing']))) or 'none'}</p>"
        "<table><tr><th>#</th><th>category</th><th>attribute</th><th>value</th><th>from</th>"
        f"</tr>{hti_rows}</table>",
        style,
    )
