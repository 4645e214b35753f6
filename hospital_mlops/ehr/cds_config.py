"""``config/cds.yaml``: the CDS Hooks services, the card's wording and links, validated at load."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.paths import config_path

Hook = Literal["encounter-discharge", "patient-view"]
Indicator = Literal["info", "warning", "critical"]
DISCHARGE_SERVICE = "readmission-risk-discharge"


class CdsConfigError(ValueError):
    pass


class Service(StrictModel):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    hook: Hook
    title: str = Field(min_length=1, max_length=80)
    description: str = Field(min_length=1)


class Source(StrictModel):
    label: str = Field(min_length=1, max_length=80)
    model_card_url: str = Field(pattern=r"^https?://")
    # "{service_base}" is the address the call came to (this service's own explanation page)
    explanation_url: str = Field(pattern=r"^(https?://|\{service_base\}).*\{prediction_id\}")


class Timeouts(StrictModel):
    predictor_seconds: float = Field(gt=0, le=10)
    fhir_seconds: float = Field(gt=0, le=30)


class CdsConfig(StrictModel):
    services: tuple[Service, ...] = Field(min_length=1)
    indicator_by_band: dict[Literal["low", "moderate", "high"], Indicator]
    source: Source
    limitations: tuple[str, ...] = Field(min_length=1)
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
        return self

    def service(self, service_id: str) -> Service | None:
        return next((s for s in self.services if s.id == service_id), None)


def load_cds_config(path: Path | str | None = None) -> CdsConfig:
    config = load_yaml_model(
        Path(path) if path else config_path("cds.yaml"), CdsConfig, CdsConfigError, "CDS config"
    )
    # the card's reasons are the ones monitoring counts: one list, two files, checked here
    allowed = set(load_monitoring_policy().feedback.override_reasons)
    stray = sorted(set(config.override_reasons.values()) - allowed)
    if stray:
        raise CdsConfigError(
            f"CDS config override_reasons {stray} are not in config/monitoring.yaml's "
            "feedback.override_reasons: responses would not join the workflow monitoring"
        )
    return config
