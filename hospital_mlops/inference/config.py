"""Typed serving configuration (``config/serving.yaml``), validated when a server starts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field

from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import config_path

LicenceProfile = Literal["bsl", "permissive"]
PROFILE_ENV = "HMLOPS_LICENCE_PROFILE"
DRIFT_DB_ENV = "HMLOPS_DRIFT_DB_URL"


class ServingConfigError(ValueError):
    pass


class Limits(StrictModel):
    max_instances: int = Field(default=100, ge=1, le=1000)
    max_body_bytes: int = Field(default=1_000_000, ge=10_000, le=50_000_000)


class ExplainerConfig(StrictModel):
    background_rows: int = Field(default=30, ge=5, le=500)
    nsamples: int = Field(default=256, ge=32, le=10_000)
    top_k: int = Field(default=3, ge=1, le=10)
    # KernelSHAP costs nsamples × background_rows predictor rows per instance.
    max_technical_instances: int = Field(default=10, ge=1, le=100)
    predictor_timeout_seconds: float = Field(default=10.0, gt=0, le=600)


class DriftConfig(StrictModel):
    window: int = Field(default=1000, ge=50, le=100_000)
    p_value: float = Field(default=0.05, gt=0, lt=0.5)
    reference_rows: int = Field(default=20_000, ge=500, le=1_000_000)
    store_url: str = ""


class ServingConfig(StrictModel):
    licence_profile: LicenceProfile = "bsl"
    limits: Limits = Field(default_factory=Limits)
    explainer: ExplainerConfig = Field(default_factory=ExplainerConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)

    @property
    def explainer_backend(self) -> Literal["alibi", "pred_contribs"]:
        """KernelShap (alibi, BSL 1.1) or XGBoost's exact TreeSHAP (Apache-2.0)."""
        return "alibi" if self.licence_profile == "bsl" else "pred_contribs"

    @property
    def drift_backend(self) -> Literal["alibi-detect", "scipy"]:
        """alibi-detect TabularDrift/KSDrift (BSL 1.1) or scipy KS/chi-square (BSD)."""
        return "alibi-detect" if self.licence_profile == "bsl" else "scipy"


def load_serving_config(path: Path | str | None = None) -> ServingConfig:
    """The file, then the environment overrides (profile, drift store URL)."""
    config = load_yaml_model(
        Path(path) if path else config_path("serving.yaml"),
        ServingConfig,
        ServingConfigError,
        "serving config",
    )
    updates: dict[str, object] = {}
    profile = os.environ.get(PROFILE_ENV)
    if profile:
        if profile not in ("bsl", "permissive"):
            raise ServingConfigError(f"{PROFILE_ENV}={profile!r}: must be 'bsl' or 'permissive'")
        updates["licence_profile"] = profile
    store = os.environ.get(DRIFT_DB_ENV)
    if store:
        updates["drift"] = config.drift.model_copy(update={"store_url": store})
    return config.model_copy(update=updates) if updates else config
