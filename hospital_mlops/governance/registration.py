"""Writes to the MLflow model registry: a candidate logged with its evidence, a version
registered only when every gate passed, sign-offs, and promotion to an alias.

``registry`` reads; this module writes through the same client and error handling, so every
failure still reaches callers as a RegistryError, RegistryUnavailable or RegistrationFailed.
Nothing that identifies a patient is written: parameters, metrics, hashes and token-free feature
rows only.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.governance.registry import (
    GATES_TAG,
    RETIRED_TAG,
    SIGNOFF_PREFIX,
    PromotionRefused,
    RegistryError,
    RegistryUnavailable,
    client,
    experiment_for,
    failure_cause,
    model_version,
    redact,
    signoffs,
    store_errors,
    tracking_uri,
)


def pip_requirements() -> list[str]:
    """The scoring function's runtime, pinned to what trained it (xgboost as the CPU-only wheel:
    plain ``xgboost`` drags in CUDA libraries a CPU predictor never uses)."""
    from importlib.metadata import version

    pinned = [f"{name}=={version(name)}" for name in ("numpy", "pandas", "pyarrow", "pydantic")]
    return [f"xgboost-cpu=={version('xgboost-cpu')}", *pinned, "pyyaml>=6"]


@dataclass(frozen=True)
class Candidate:
    """Everything the registry records for one trained model."""

    model_dir: Path
    evidence: dict[str, Path]  # name → file
    params: dict[str, Any]
    metrics: dict[str, float]
    tags: dict[str, str]
    gates_passed: bool
    input_example: pd.DataFrame
    golden: pd.DataFrame  # feature rows + "expected_risk"


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class RegistrationFailed(RuntimeError):
    """The store failed part-way (locked, full, gone): what was and was not written is said."""


def log_candidate(model_name: str, candidate: Candidate) -> dict[str, Any]:
    """Log the run (always) and register a version (only when every gate passed). A store that
    fails part-way (locked, gone) is a RegistrationFailed naming what was written; no alias is
    ever touched here, so the serving champion cannot change."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    progress: dict[str, Any] = {}
    try:
        return _log_candidate(model_name, candidate, progress)
    except (MlflowException, SQLAlchemyError, OSError) as exc:
        done = (
            f"the run {progress['run_id']} was logged"
            if "run_id" in progress
            else "nothing was logged"
        )
        raise RegistrationFailed(
            f"the MLflow store at {redact(tracking_uri())} failed during registration "
            f"({failure_cause(exc)}); {done}, {_left_registered(model_name, progress)}, and no "
            "alias changed. Run the step again when the store answers."
        ) from None


def _left_registered(model: str, progress: dict[str, Any]) -> str:
    """What a failed registration left in the registry. A SQLite store's transaction says it
    alone; over HTTP the server may have created the version and its answer been lost, so the
    registry is asked once more, and when it cannot answer that is said."""
    if "version" in progress:
        return f"version {progress['version']} was created but not completed (retire it)"
    if "registering" not in progress or not tracking_uri().startswith(("http://", "https://")):
        return "no version was registered"
    from mlflow.exceptions import MlflowException

    run_id = progress["run_id"]
    try:
        found = client().search_model_versions(f"name='{model}' and run_id='{run_id}'")
    except (RegistryUnavailable, MlflowException, OSError):
        return (
            f"whether a version was registered could not be checked (look for one of run "
            f"{run_id} in `hmlops registry show --model {model}` and retire it)"
        )
    if not found:
        return "no version was registered"
    numbers = ", ".join(str(v.version) for v in sorted(found, key=lambda v: int(v.version)))
    if len(found) == 1:
        return f"version {numbers} was created but not completed (retire it)"
    return f"versions {numbers} were created but not completed (retire them)"


def _log_candidate(
    model_name: str, candidate: Candidate, progress: dict[str, Any]
) -> dict[str, Any]:
    import mlflow
    from mlflow.models import infer_signature

    from hospital_mlops.governance.pyfunc import risk_pyfunc_class

    c = client()
    experiment_id = experiment_for(c, model_name)
    evidence_hashes = {name: _sha256(path) for name, path in candidate.evidence.items()}
    tags = {
        **candidate.tags,
        GATES_TAG: str(candidate.gates_passed).lower(),
        "evidence.sha256": json.dumps(evidence_hashes, sort_keys=True),
    }
    signature = infer_signature(
        candidate.input_example, pd.DataFrame({"risk": candidate.golden["expected_risk"][:1]})
    )
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in candidate.params.items()})
        mlflow.log_metrics(candidate.metrics)
        mlflow.set_tags(tags)
        for path in candidate.evidence.values():
            mlflow.log_artifact(str(path), artifact_path="evidence")
        golden_path = candidate.model_dir.parent / artifacts.GOLDEN
        candidate.golden.to_parquet(golden_path, index=False)
        mlflow.log_artifact(str(golden_path), artifact_path="golden")
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=risk_pyfunc_class()(),
            artifacts={"risk_model": str(candidate.model_dir)},
            code_paths=[str(Path(__file__).resolve().parent.parent)],
            signature=signature,
            input_example=candidate.input_example,
            pip_requirements=pip_requirements(),
        )
        run_id = run.info.run_id
    progress["run_id"] = run_id
    result: dict[str, Any] = {
        "name": model_name,
        "version": None,
        "run_id": run_id,
        "model_uri": info.model_uri,
        "evidence_sha256": evidence_hashes,
    }
    if not candidate.gates_passed:
        return result
    progress["registering"] = True
    version = mlflow.register_model(info.model_uri, model_name, tags=tags)
    progress["version"] = int(version.version)
    c.set_model_version_tag(model_name, version.version, "run_id", run_id)
    result["version"] = int(version.version)
    return result


@store_errors
def sign_off(model: str, version: int, role: str, by: str, note: str = "") -> dict[str, Any]:
    from hospital_mlops.governance.config import ROLES

    if role not in ROLES:
        raise RegistryError(f"role must be one of {list(ROLES)}, not {role!r}")
    if not by.strip():
        raise RegistryError("a sign-off needs the name of the person signing (--by)")
    c = client()
    model_version(c, model, version)
    record = {"by": by, "at": datetime.now(UTC).isoformat(timespec="seconds"), "note": note}
    c.set_model_version_tag(model, str(version), SIGNOFF_PREFIX + role, json.dumps(record))
    return {"model": model, "version": version, "role": role, **record}


@store_errors
def promote(model: str, version: int, alias: str, required_roles: Sequence[str]) -> dict[str, Any]:
    """Point ``alias`` at the version, or refuse naming everything that is missing."""
    c = client()
    mv = model_version(c, model, version)
    if mv.tags.get(RETIRED_TAG):
        raise PromotionRefused(f"{model} version {version} is retired: {mv.tags[RETIRED_TAG]}")
    missing = []
    if mv.tags.get(GATES_TAG) != "true":
        missing.append("passed model gates")
    signed = signoffs(mv)
    missing += [f"{role} sign-off" for role in required_roles if role not in signed]
    if missing:
        raise PromotionRefused(
            f"{model} version {version} cannot become {alias!r}; missing: {', '.join(missing)}"
        )
    c.set_registered_model_alias(model, alias, str(version))
    return {"model": model, "version": version, "alias": alias, "signoffs": signed}
