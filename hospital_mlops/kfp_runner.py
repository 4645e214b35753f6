"""Run, compile and submit the data pipeline. The only library module that imports kfp, and only
inside functions: the domain modules stay orchestration-free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from hospital_mlops.catalog import Catalog, load_catalog
from hospital_mlops.normalize import DEMO_HMAC_KEY, HMAC_KEY_ENV, load_hmac_key
from hospital_mlops.paths import project_root
from hospital_mlops.sources.extract import default_extract, preflight_extract


def new_run_id() -> str:
    return f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """kfp.local and component subprocesses print to fd 1; keep stdout for the JSON summary."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _ensure_import_path() -> None:
    """Component subprocesses import ``hospital_mlops``; make the project importable for them."""
    root = str(project_root())
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p]])


def resolve_extract(
    source: str,
    extract: Path | None,
    scenario: str | None,
    out: Path,
    *,
    synthetic_encounters: int = 20_000,
    seed: int = 7,
    catalog: Catalog | None = None,
) -> Path:
    spec = (catalog or load_catalog()).source(source)
    if extract is None:
        if source == "synthetic":
            from hospital_mlops.sources.synthetic import generate_extract

            target = out / "extracts" / f"synthetic-n{synthetic_encounters}-s{seed}"
            if not (target / "extract.json").exists():
                generate_extract(target, synthetic_encounters, seed=seed)
            extract = target
        else:
            extract = default_extract(source, spec)
    preflight_extract(extract, spec)
    if scenario:
        from hospital_mlops.faults import materialize_scenario

        extract = materialize_scenario(scenario, source, spec, extract, out / "extracts", seed=seed)
    return extract


def run_locally(
    *,
    source: str,
    use: str,
    extract: Path | None,
    scenario: str | None,
    out: Path,
    catalog: Path | None = None,
    demo_key: bool = False,
    synthetic_encounters: int = 20_000,
    seed: int = 7,
    train_model: bool = True,
) -> dict[str, Any]:
    """Run the pipeline with kfp.local's SubprocessRunner and return the run summary."""
    from hospital_mlops import stages

    cat = load_catalog(catalog)
    cat.require_use(source, use)  # refuse before anything is read
    if demo_key:
        os.environ[HMAC_KEY_ENV] = DEMO_HMAC_KEY
    load_hmac_key()  # refuse to start without a key
    if train_model:
        from hospital_mlops.governance.config import load_governance
        from hospital_mlops.governance.registry import client
        from hospital_mlops.use_case import load_use_case

        load_use_case().for_source(source)  # a use case without this source fails here
        load_governance()
        client()  # an unreachable registry fails before any data is read
    out = out.resolve()
    resolved = resolve_extract(
        source,
        extract,
        scenario,
        out,
        synthetic_encounters=synthetic_encounters,
        seed=seed,
        catalog=cat,
    )
    run_id = new_run_id()
    ctx = stages.RunContext(source, use, out, run_id, str(catalog) if catalog else None)

    from kfp import local

    from pipelines.data_pipeline import make_pipeline

    _ensure_import_path()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(ctx.run_dir / "kfp"),
        raise_on_error=False,
    )
    pipeline = make_pipeline()
    with _stdout_to_stderr():
        pipeline(
            run_id=run_id,
            source=source,
            use=use,
            extract=str(resolved.resolve()),
            store_root=str(out),
            catalog_path=str(catalog.resolve()) if catalog else "",
            train_model=train_model,
        )
    run = ctx.lineage.run(run_id)
    summary = run if run is not None else stages.finalize_run(ctx, expect_model=train_model)
    summary["lineage_path"] = str(ctx.lineage.runs / f"{run_id}.json")
    summary["extract"] = str(resolved)
    summary["scenario"] = scenario
    model_failed = summary.get("model_gates_passed") is False
    if (
        summary["status"] != "succeeded"
        and all(g["success"] for g in summary["gates"])
        and not model_failed
    ):
        summary["error"] = (
            "a pipeline step failed without a gate verdict; see the step log above and "
            f"{ctx.run_dir / 'kfp'}"
        )
    return summary


def compile_pipeline(out: Path, image: str | None = None) -> Path:
    from kfp import compiler

    from components.data_components import DEFAULT_IMAGE
    from pipelines.data_pipeline import make_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_pipeline(image or DEFAULT_IMAGE), str(out))
    validate_ir(out)
    return out


def validate_ir(path: Path) -> dict[str, Any]:
    """Strict proto parse of the compiled IR: unknown fields or wrong types raise."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(docs[0], spec, ignore_unknown_fields=False)
    platform = pipeline_spec_pb2.PlatformSpec()
    if len(docs) > 1:
        json_format.ParseDict(docs[1], platform, ignore_unknown_fields=False)
    return {"pipeline": spec, "platform": platform}


def submit(args: Any) -> dict[str, Any]:
    """Submit to a KFP host (real cluster only; tested when a host is given)."""
    import kfp

    from components.data_components import DEFAULT_IMAGE
    from pipelines.data_pipeline import make_pipeline

    run_id = new_run_id()
    client = kfp.Client(host=args.host)
    result = client.create_run_from_pipeline_func(
        make_pipeline(args.image or DEFAULT_IMAGE),
        arguments={
            "run_id": run_id,
            "source": args.source,
            "use": args.use,
            "extract": args.input,
        },
        experiment_name=args.experiment,
        run_name=run_id,
        service_account=args.service_account,
    )
    return {"run_id": run_id, "kfp_run_id": result.run_id, "host": args.host}
