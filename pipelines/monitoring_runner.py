"""The monitoring pipeline on KFP: run locally (kfp.local), compile to IR, and create its
recurring run on a cluster from ``manifests/kfp/monitoring-recurring-run.yaml``.

KFP v2 keeps recurring runs in its own database, created through its API (the backend then
makes the ScheduledWorkflow); the file is the reviewed, version-controlled description of that
API call, validated here before anything is sent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from hospital_mlops import artifacts
from hospital_mlops.config_files import StrictModel, load_yaml_model
from hospital_mlops.paths import project_root

PIPELINE_SERVICE_ACCOUNT = "hmlops-pipeline-runner"


class RecurringRunError(ValueError):
    pass


class RecurringRunSpec(StrictModel):
    name: str = Field(min_length=1, max_length=128)
    experiment: str = Field(min_length=1)
    pipeline_package: str = Field(min_length=1)
    # KFP's cron has six fields, seconds first: "0 0 6 * * *" is 06:00 every day
    cron: str
    max_concurrency: int = Field(default=1, ge=1, le=10)
    no_catchup: bool = True
    parameters: dict[str, str | int | bool] = Field(default_factory=dict)
    # the identity the runs' pods take (kustomize/rbac/pipeline-runner)
    service_account: str = Field(default=PIPELINE_SERVICE_ACCOUNT, min_length=1)

    @field_validator("cron")
    @classmethod
    def _six_fields(cls, value: str) -> str:
        if len(value.split()) != 6:
            raise ValueError(
                f"{value!r}: KFP cron has six fields, seconds first (e.g. '0 0 6 * * *')"
            )
        return value

    @model_validator(mode="after")
    def _known_parameters(self) -> RecurringRunSpec:
        """The parameters are ones the scheduled pipeline takes (its package says which)."""
        import inspect

        makers = _pipeline_makers()
        if self.pipeline_package not in makers:
            raise ValueError(
                f"pipeline_package {self.pipeline_package!r} is not a pipeline this project "
                f"schedules; it has {sorted(makers)}"
            )
        if "run_id" in self.parameters:
            raise ValueError("run_id is set per run, not in the schedule")
        signature = inspect.signature(makers[self.pipeline_package]().pipeline_func)
        accepted = set(signature.parameters) - {"run_id"}
        unknown = sorted(set(self.parameters) - accepted)
        if unknown:
            raise ValueError(f"unknown pipeline parameters {unknown}; it takes {sorted(accepted)}")
        return self


def _pipeline_makers() -> dict[str, Any]:
    """The pipelines a recurring run may name, by their committed IR's path."""
    from pipelines.batch_pipeline import make_batch_pipeline
    from pipelines.monitoring_pipeline import make_monitoring_pipeline

    return {
        "pipelines/compiled/monitoring_pipeline.yaml": make_monitoring_pipeline,
        "pipelines/compiled/batch_pipeline.yaml": make_batch_pipeline,
    }


def recurring_run_path() -> Path:
    return project_root() / "manifests" / "kfp" / "monitoring-recurring-run.yaml"


def load_recurring_run(path: Path | None = None) -> RecurringRunSpec:
    return load_yaml_model(
        path or recurring_run_path(), RecurringRunSpec, RecurringRunError, "recurring run"
    )


def compile_monitoring(out: Path, image: str | None = None) -> Path:
    from kfp import compiler

    from components.data_components import DEFAULT_IMAGE
    from pipelines.monitoring_pipeline import make_monitoring_pipeline
    from pipelines.runner import validate_ir

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_monitoring_pipeline(image or DEFAULT_IMAGE), str(out))
    validate_ir(out)
    return out


def run_monitoring_locally(
    *,
    out: Path,
    model: str | None = None,
    ref: str = "champion",
    source: str = "",
    store_root: Path | None = None,
    policy_path: Path | None = None,
    protocol_change: str = "",
) -> dict[str, Any]:
    """One monitoring run through kfp.local; returns what each step produced. ``model``: the
    first use case's by default; ``source``: the champion's own by default."""
    from hospital_mlops.governance.config import first_model_name
    from pipelines.monitoring_pipeline import make_monitoring_pipeline
    from pipelines.runner import local_subprocess_root, stdout_to_stderr

    run_id, root = local_subprocess_root(out, "monitoring")
    with stdout_to_stderr():
        make_monitoring_pipeline()(
            run_id=run_id,
            model=model or first_model_name(),
            ref=ref,
            source=source,
            store_root=str((store_root or out).resolve()),
            policy_path=str(policy_path.resolve()) if policy_path else "",
            protocol_change=protocol_change,
            # the laptop's stores come from this process's environment
            prediction_log_url=os.environ.get("HMLOPS_PREDICTION_LOG_URL", ""),
            drift_store_url=os.environ.get("HMLOPS_DRIFT_DB_URL", ""),
            mlflow_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI", ""),
        )
    return _collect(root, run_id)


def _collect(root: Path, run_id: str) -> dict[str, Any]:
    """The steps' outputs, found under kfp.local's pipeline root."""
    found: dict[str, Any] = {"run_id": run_id, "pipeline_root": str(root)}
    for run_json in root.rglob("run/run.json"):
        found["monitoring"] = json.loads(run_json.read_text())
        found["report"] = str(run_json.parent / artifacts.MONITORING_REPORT)
    for decision in root.rglob("decision"):
        if decision.is_file():
            found["decision"] = json.loads(decision.read_text())
    for comparison in root.rglob("comparison"):
        if comparison.is_file():
            found["comparison"] = json.loads(comparison.read_text())
    return found


def schedule(host: str, spec: RecurringRunSpec, package: Path) -> dict[str, Any]:
    """Create the recurring run on a KFP host (a real cluster; tested when one is given)."""
    import kfp

    client = kfp.Client(host=host)
    experiment = client.create_experiment(spec.experiment)
    job = client.create_recurring_run(
        experiment_id=experiment.experiment_id,
        job_name=spec.name,
        cron_expression=spec.cron,
        max_concurrency=spec.max_concurrency,
        no_catchup=spec.no_catchup,
        pipeline_package_path=str(package),
        params=dict(spec.parameters),
        enable_caching=False,
        service_account=spec.service_account,
    )
    return {"recurring_run_id": job.recurring_run_id, "name": spec.name, "cron": spec.cron}
