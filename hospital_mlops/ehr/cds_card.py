"""CDS Hooks cards (CDS Hooks 2.0 field names) from a predictor answer: concise, explained,
dated, and honest about what the model must not be used for. Pure: no HTTP here.

The card's ``uuid`` is the prediction id, so the clinician's feedback joins the prediction log.
A card that is not the model's answer (not scorable, or the policy's fallback) has its own uuid
and says plainly what it is.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import numpy as np

from hospital_mlops.ehr.cds_config import CardSettings, Suggestion
from hospital_mlops.ehr.fhir_input_reader import ModelInputs

# CDS Hooks 2.0.1: a card's summary is "less than 140 characters"
SUMMARY_MAX = 139
BINS = 10


@dataclass(frozen=True)
class CalibrationTable:
    """Equal-mass risk bins of the validation (test) period with the observed 30-day rate in
    each: "of 100 similar patients, about N were readmitted"."""

    upper_edges: np.ndarray  # the top risk of each bin but the last
    observed: np.ndarray  # readmitted share per bin
    counts: np.ndarray

    @classmethod
    def from_scores(
        cls, risk: np.ndarray, outcome: np.ndarray, bins: int = BINS
    ) -> CalibrationTable:
        order = np.argsort(risk, kind="stable")
        parts = np.array_split(order, bins)
        edges = np.array([risk[p].max() for p in parts[:-1]])
        observed = np.array([outcome[p].mean() for p in parts])
        return cls(edges, observed, np.array([len(p) for p in parts]))

    def similar(self, risk: float) -> tuple[int, int]:
        """(readmitted per 100, patients) in the validation period's bin of ``risk``."""
        i = int(np.searchsorted(self.upper_edges, risk, side="left"))
        return round(float(self.observed[i]) * 100), int(self.counts[i])


def _percent(risk: float) -> str:
    return f"{risk * 100:.0f}%" if risk >= 0.01 else "<1%"


def _age(seconds: float) -> str:
    hours = seconds / 3600
    if hours < 1:
        return f"{seconds / 60:.0f} minutes"
    if hours < 48:
        return f"{hours:.0f} hours"
    return f"{hours / 24:.0f} days"


def _links(config: CardSettings, answer: dict[str, Any], service_base: str) -> list[dict[str, str]]:
    base = service_base.rstrip("/")
    url = config.source.explanation_url.format(
        prediction_id=str(answer["prediction_id"]), service_base=base
    )
    links = [
        {"label": "Full explanation of this risk", "url": url, "type": "absolute"},
        {"label": "Model card", "url": config.source.model_card_url, "type": "absolute"},
    ]
    model, _, version = str(answer.get("model_version", "")).rpartition("/")
    if model and version.isdigit():  # the version that answered, as FHIR for the EHR to file
        fhir = config.source.model_card_fhir_url.format(
            service_base=base, model=quote(model, safe=""), version=version
        )
        links.append({"label": "Model card (FHIR, HL7 AI Transparency)", "url": fhir,
                      "type": "absolute"})  # fmt: skip
    return links


def _source(config: CardSettings) -> dict[str, str]:
    return {"label": config.source.label, "url": config.source.model_card_url}


def override_reasons(config: CardSettings) -> list[dict[str, str]]:
    return [
        {"code": code, "system": config.override_reasons_system, "display": display}
        for code, display in config.override_reasons.items()
    ]


def _inputs_section(inputs: ModelInputs) -> list[str]:
    lines = []
    if inputs.missing:
        lines.append(f"**Not in the record:** {', '.join(sorted(set(inputs.missing)))}.")
    if inputs.unmapped:
        codes = ", ".join(f"{u.input} ({u.code} in {u.system})" for u in inputs.unmapped)
        lines.append(f"**Codes the model cannot read:** {codes}.")
    return lines


def risk_card(
    answer: dict[str, Any],
    inputs: ModelInputs,
    config: CardSettings,
    calibration: CalibrationTable | None,
    now: datetime,
    service_base: str = "",
) -> dict[str, Any]:
    """The model's answer as a card; ``answer`` is one predictor v1 prediction; its explanation
    link is under ``service_base`` when the configured URL says so."""
    risk, band = float(answer["risk"]), str(answer["band"])
    version = str(answer.get("model_version", ""))
    text = config.text
    summary = f"{text.risk_label} {_percent(risk)} ({band})"
    if any("outside the intended use" in text for text in answer.get("limitations", [])):
        summary += ": outside intended use"
    detail = ["**Main reasons:**"]
    detail += [f"{n}. {r['text']}" for n, r in enumerate(answer.get("reasons", [])[:3], start=1)]
    if calibration is not None:
        per_100, patients = calibration.similar(risk)
        detail.append(
            f"**How to read it:** of 100 similar patients in the validation period, about "
            f"{per_100} {text.outcome_past} ({patients:,} patients in that risk range)."
        )
    else:
        detail.append(
            f"**How to read it:** the risk is calibrated: of 100 patients with this risk, about "
            f"{round(risk * 100)} {text.outcome_expected}."
        )
    if inputs.data_start and inputs.data_end:
        window = f"{inputs.data_start:%Y-%m-%d %H:%M} to {inputs.data_end:%Y-%m-%d %H:%M} UTC"
        age = max((now - inputs.data_end).total_seconds(), 0.0)
        detail.append(f"**Data used:** from {window}; the newest is {_age(age)} old.")
    detail += _inputs_section(inputs)
    limitations = [*answer.get("limitations", []), *config.limitations]
    detail.append("**Limitations:** " + " ".join(_sentence(x) for x in limitations))
    detail.append(f"_Model {version}; prediction {answer['prediction_id']}._")
    card = {
        "uuid": str(answer["prediction_id"]),
        "summary": summary[:SUMMARY_MAX],
        "indicator": config.indicator_by_band.get(band, "info"),
        "detail": "\n\n".join(detail),
        "source": _source(config),
        "overrideReasons": override_reasons(config),
        "links": _links(config, answer, service_base),
    }
    if text.suggestion is not None and answer.get("alert") is True:
        card["suggestions"] = [_suggestion(text.suggestion, answer, inputs)]
        card["selectionBehavior"] = "any"
    return card


def _suggestion(suggestion: Suggestion, answer: dict[str, Any], inputs: ModelInputs) -> dict:
    """The proposed order as a CDS Hooks suggestion: a FHIR R4 ServiceRequest to create, for
    the patient and encounter of the call, citing the prediction that suggested it. It carries
    the AI Transparency on FHIR label every AI-influenced resource SHALL carry (AIAST)."""
    request: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "meta": {"security": [AI_ASSERTED]},
        "status": "draft",
        "intent": "proposal",
        "code": {
            "coding": [
                {
                    "system": suggestion.system,
                    "code": suggestion.code,
                    "display": suggestion.display,
                }
            ],
            "text": suggestion.display,
        },
        "reasonCode": [{"text": f"Model prediction {answer['prediction_id']}"}],
    }
    if inputs.patient_id:
        request["subject"] = {"reference": f"Patient/{inputs.patient_id}"}
    if inputs.encounter_id:
        request["encounter"] = {"reference": f"Encounter/{inputs.encounter_id}"}
    return {
        "label": suggestion.label,
        "uuid": suggestion_uuid(str(answer["prediction_id"])),
        "isRecommended": True,
        "actions": [{"type": "create", "description": suggestion.label, "resource": request}],
    }


AI_ASSERTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "AIAST",
    "display": "Artificial Intelligence asserted",
}


def suggestion_uuid(prediction_id: str) -> str:
    """A risk card's one suggestion: its uuid follows the card's, so feedback accepting it
    (``acceptedSuggestions``) is checked without storing it."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"suggestion:{prediction_id}"))


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def not_scored_card(
    reasons: list[str], inputs: ModelInputs, config: CardSettings
) -> dict[str, Any]:
    """No risk: the record does not hold what the model needs, or is outside what it knows."""
    text = config.text
    detail = [f"The {text.risk_label} was not calculated for this stay:"]
    detail += [f"- {r}" for r in reasons]
    detail += _inputs_section(inputs)
    detail.append(f"Use usual clinical judgement for {text.purpose}.")
    return {
        "uuid": str(uuid.uuid4()),
        "summary": f"{text.risk_label} not available for this stay"[:SUMMARY_MAX],
        "indicator": "info",
        "detail": "\n\n".join(detail),
        "source": _source(config),
    }


def fallback_card(answer: dict[str, Any], config: CardSettings) -> dict[str, Any]:
    """The ``config/fallback.yaml`` answer as a card, plainly not the model's current risk."""
    label = config.text.risk_label
    if answer.get("mode") == "last_cached_score" and answer.get("risk") is not None:
        summary = (
            f"Earlier {label} {_percent(float(answer['risk']))} "
            f"({answer.get('band')}), {answer.get('age_hours', 0):.0f} h old"
        )
    elif answer.get("mode") == "static_rule":
        summary = "Risk model unavailable: a rule-based flag is shown instead"
    else:
        summary = f"{label} unavailable right now"
    flagged = answer.get("alert") is True
    return {
        "uuid": str(uuid.uuid4()),
        "summary": summary[:SUMMARY_MAX],
        "indicator": "warning" if flagged else "info",
        "detail": f"{answer['message']}\n\n_Why: {answer.get('cause_text', answer.get('cause'))}._",
        "source": _source(config),
    }
