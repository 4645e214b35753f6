"""``config/governance.yaml``: required sign-offs and the human-only facts of the evidence."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import config_path

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


class Governance(StrictModel):
    version: str
    registered_model_name: str
    required_signoffs: list[Role]
    developer: Developer
    owner: Owner
    risk_assessment: str
    monitoring_links: dict[str, str] = Field(default_factory=dict)


def load_governance(path: Path | str | None = None) -> Governance:
    return load_yaml_model(
        Path(path) if path else config_path("governance.yaml"),
        Governance,
        GovernanceError,
        "governance config",
    )
