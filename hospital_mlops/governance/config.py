"""``config/governance.yaml``: required sign-offs and the human-only facts of the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import config_path
from hospital_mlops.use_case import UseCase, load_use_cases

Role = Literal["clinical", "technical", "privacy", "compliance"]
ROLES: tuple[Role, ...] = ("clinical", "technical", "privacy", "compliance")


class GovernanceError(ValueError):
    """The governance file is missing or malformed."""


class Developer(StrictModel):
    name: str
    contact: str = ""
    funding_source: str = ""
    conflicts_of_interest: str = ""


class Owner(StrictModel):
    clinical_owner: str = ""
    technical_owner: str = ""


class Release(StrictModel):
    stage: str = ""
    regulatory_approval: str = ""
    global_availability: str = ""


class ExternalValidation(StrictModel):
    data_source: str = ""
    party: str = ""
    representativeness: str = ""
    process: str = ""


class Maintenance(StrictModel):
    validity_monitoring: str = ""
    fairness_monitoring: str = ""
    update_process: str = ""
    correction_frequency: str = ""


class Governance(StrictModel):
    version: str
    registered_model_name: str
    required_signoffs: list[Role]
    developer: Developer
    owner: Owner
    release: Release = Release()
    clinical_risk_level: str = ""
    risk_assessment: str
    stakeholders_consulted: str = ""
    relevance_to_deployed_setting: str = ""
    patient_consent_or_disclosure: str = ""
    external_validation: ExternalValidation = ExternalValidation()
    outcome_evaluations: list[str] = Field(default_factory=list)
    maintenance: Maintenance = Maintenance()
    monitoring_links: dict[str, str] = Field(default_factory=dict)


def load_governance(path: Path | str | None = None) -> Governance:
    return load_yaml_model(
        Path(path) if path else config_path("governance.yaml"),
        Governance,
        GovernanceError,
        "governance config",
    )


def first_model_name() -> str:
    """The registry name of the first use case's model: the default wherever one is needed."""
    return (
        next(iter(load_use_cases().values())).model_name or load_governance().registered_model_name
    )


def use_cases_by_model() -> dict[str, UseCase]:
    """Every use case by its registry model name (the first's defaults to governance.yaml's
    registered_model_name)."""
    cases = load_use_cases()
    first = next(iter(cases.values()))
    named = {case.model_name: case for case in cases.values() if case.model_name}
    named.setdefault(first_model_name(), first)
    return named


def use_case_for_model(model: str) -> UseCase | None:
    """The use case whose model the registry calls ``model``; None for a model of none."""
    return use_cases_by_model().get(model)
