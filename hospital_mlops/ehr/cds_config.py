"""``config/cds.yaml``: the CDS Hooks services, the card's wording and links, validated at load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.paths import config_path

Hook = Literal["encounter-start", "encounter-discharge", "patient-view"]
# the hooks whose context names the encounter (the service scores that encounter)
ENCOUNTER_HOOKS = ("encounter-start", "encounter-discharge")
Indicator = Literal["info", "warning", "critical"]
DISCHARGE_SERVICE = "readmission-risk-discharge"


class CdsConfigError(ValueError):
    pass


class Service(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    hook: Hook
    title: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1)
    # the use case whose model answers (config/use_case.yaml); None: the first (readmission)
    use_case: str | None = None


class Source(StrictModel):
    label: str = Field(min_length=1, max_length=80)
    model_card_url: str = Field(pattern=r"^https?://")
    # "{service_base}" is the address the call came to (this service's own explanation page)
    explanation_url: str = Field(pattern=r"^(https?://|\{service_base\}).*\{prediction_id\}")
    # the version's card as FHIR (HL7 AI Transparency on FHIR); by default this service's own
    model_card_fhir_url: str = Field(
        default="{service_base}/model-cards/{model}/{version}",
        pattern=r"^(https?://|\{service_base\}).*\{model\}.*\{version\}",
    )


class Suggestion(StrictModel):
    """A card's suggestion: one proposed order (a FHIR ServiceRequest) the clinician can
    accept or ignore."""

    label: str = Field(min_length=1, max_length=80)
    system: str = Field(pattern=r"^https?://")
    code: str = Field(min_length=1)
    display: str = Field(min_length=1)


class CardText(StrictModel):
    """How a use case's card words its risk, in a clinician's words."""

    risk_label: str = Field(min_length=1, max_length=60)  # "30-day readmission risk"
    outcome_past: str = Field(min_length=1)  # "were readmitted within 30 days"
    outcome_expected: str = Field(min_length=1)  # "are expected to be readmitted within …"
    purpose: str = Field(min_length=1)  # "discharge planning"
    suggestion: Suggestion | None = None  # offered on a high-band card


class UseCaseCard(StrictModel):
    """A further use case's card: its wording, its source and its limitations."""

    text: CardText
    source: Source
    limitations: tuple[str, ...] = Field(min_length=1)


class Timeouts(StrictModel):
    predictor_seconds: float = Field(gt=0, le=10)
    fhir_seconds: float = Field(gt=0, le=30)


class CdsConfig(StrictModel):
    services: tuple[Service, ...] = Field(min_length=1)
    indicator_by_band: dict[Literal["low", "moderate", "high"], Indicator]
    source: Source
    limitations: tuple[str, ...] = Field(min_length=1)
    card: CardText  # the first use case's (the services without a use_case)
    # the cards of further use cases, by use case id
    use_cases: dict[str, UseCaseCard] = Field(default_factory=dict)
    override_reasons_system: str = Field(pattern=r"^https?://")
    override_reasons: dict[str, str] = Field(min_length=1)
    cors_allowed_origins: tuple[str, ...] = ()
    # The address EHRs call (behind a gateway); a client's JWT must be addressed (aud) to it.
    # Empty: the address the request came to.
    public_base_url: str = Field(default="", pattern=r"^(https?://[^\s]+[^/])?$")
    timeouts: Timeouts

    @model_validator(mode="after")
    def _complete(self) -> CdsConfig:
        if set(self.indicator_by_band) != {"low", "moderate", "high"}:
            raise ValueError("indicator_by_band needs low, moderate and high")
        for origin in self.cors_allowed_origins:
            if origin == "*" or not re.fullmatch(r"https?://[^/\s*]+", origin):
                raise ValueError(f"cors_allowed_origins: {origin!r} is not an exact origin")
        ids = [s.id for s in self.services]
        if len(set(ids)) != len(ids) or DISCHARGE_SERVICE not in ids:
            raise ValueError(f"service ids must be unique and include {DISCHARGE_SERVICE}")
        for s in self.services:
            if s.use_case is not None and s.use_case not in self.use_cases:
                raise ValueError(
                    f"service {s.id}: use case {s.use_case!r} has no card in use_cases "
                    f"(has: {sorted(self.use_cases) or 'none'})"
                )
        return self

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)

    def card_settings(self, service: Service) -> CardSettings:
        found = self.use_cases.get(service.use_case) if service.use_case else None
        text, source, limitations = (
            (found.text, found.source, found.limitations)
            if found
            else (self.card, self.source, self.limitations)
        )
        return CardSettings(
            text,
            source,
            limitations,
            {str(band): indicator for band, indicator in self.indicator_by_band.items()},
            self.override_reasons_system,
            dict(self.override_reasons),
        )


@dataclass(frozen=True)
class CardSettings:
    """Everything one service's cards are made with."""

    text: CardText
    source: Source
    limitations: tuple[str, ...]
    indicator_by_band: dict[str, Indicator]
    override_reasons_system: str
    override_reasons: dict[str, str]


def load_cds_config(path: Path | str | None = None) -> CdsConfig:
    config = load_yaml_model(
        Path(path) if path else config_path("cds.yaml"), CdsConfig, CdsConfigError, "CDS config"
    )
    # the card's reasons are the ones monitoring counts: one list, two files, checked here
    from hospital_mlops.use_case import load_use_cases

    declared = load_use_cases()
    for s in config.services:
        if s.use_case is not None and s.use_case not in declared:
            raise CdsConfigError(
                f"CDS config service {s.id}: no use case {s.use_case!r} in config/use_case.yaml"
            )
    allowed = set(load_monitoring_policy().feedback.override_reasons)
    stray = sorted(set(config.override_reasons.values()) - allowed)
    if stray:
        raise CdsConfigError(
            f"CDS config override_reasons {stray} are not in config/monitoring.yaml's "
            "feedback.override_reasons: responses would not join the workflow monitoring"
        )
    return config
