"""The data pipeline's layers as plain functions over paths: what each KFP component calls.

ingest → normalize → validate → features → publish. Every layer records its artifact's manifest
in the lineage store and runs its gate; a failed gate writes its report and raises ``GateFailed``,
so nothing downstream runs. Raw data lives only in the store's raw zone (the ingest layer); what
passes between later components is tokenized.

Store layout (``store``):
  raw/<sha256>/                 immutable raw snapshots (PHI zone: access-controlled, retained)
  published/features/<sha256>/  validated feature snapshots, written atomically by publish
  lineage/nodes/<sha256>.json   manifests of every artifact; lineage/runs/<run_id>.json
  runs/<run_id>/gates/          each gate's JSON, Markdown and HTML report
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hospital_mlops import artifacts
from hospital_mlops.data.catalog import Catalog, catalog_version, load_catalog
from hospital_mlops.data.lineage import LineageStore, code_version, utc_now
from hospital_mlops.data.normalize import load_hmac_key, normalize_extract
from hospital_mlops.data.published_index import append_entry, read_entries
from hospital_mlops.data.snapshots import (
    copy_snapshot,
    read_tables,
    sha256_path,
    verify_snapshot,
    write_snapshot,
    write_snapshot_at,
)
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.features import build_features, feature_set_for
from hospital_mlops.validation import suites
from hospital_mlops.validation.checks import GateFailed, GateResult, suite_version
from hospital_mlops.validation.gx_runner import run_gate, warm_up
from hospital_mlops.validation.reports import gate_html, gate_markdown

LAYERS = ("ingest", "validate", "features", "publish")
log = logging.getLogger("hospital_mlops.steps.data")


class PublishRefused(RuntimeError):
    """Publish found a gate of this run that did not pass, or a snapshot that was altered."""


@dataclass(frozen=True)
class RunContext:
    """What every layer of one run shares."""

    source: str
    use: str
    store: Path
    run_id: str
    catalog_path: str | None = None
    use_case: str | None = None  # an id from config/use_case.yaml; None: its first

    @property
    def run_dir(self) -> Path:
        return self.store / "runs" / self.run_id

    @property
    def gates_dir(self) -> Path:
        return self.run_dir / "gates"

    @property
    def lineage(self) -> LineageStore:
        return LineageStore(self.store)

    def catalog(self) -> Catalog:
        catalog = load_catalog(self.catalog_path)
        catalog.require_use(self.source, self.use)
        return catalog


@contextlib.contextmanager
def timed(ctx: RunContext, layer: str, step: str) -> Iterator[None]:
    """Time a step and append it to the run's timings (read by benchmarks; logs no data)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        seconds = round(time.perf_counter() - started, 3)
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        with open(ctx.run_dir / "timings.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"layer": layer, "step": step, "seconds": seconds}) + "\n")
        log.info("%s/%s took %.2f s", layer, step, seconds)


def record_lineage(ctx: RunContext, manifest: Mapping[str, Any], path: Path | None = None) -> None:
    """Record a node in lineage and note it as this run's. Nodes are shared across runs (a rerun
    reuses the same content-addressed node), so run membership is kept per run."""
    ctx.lineage.record_node(manifest)
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    with open(ctx.run_dir / "nodes.jsonl", "a", encoding="utf-8") as fh:
        where = str(path) if path else manifest.get("path")
        fh.write(
            json.dumps({"kind": manifest["kind"], "sha256": manifest["sha256"], "path": where})
            + "\n"
        )


def _base_manifest(ctx: RunContext, catalog: Catalog, kind: str, layer: str) -> dict[str, Any]:
    return {
        "kind": kind,
        "layer": layer,
        "source": ctx.source,
        "use": ctx.use,
        "run_id": ctx.run_id,
        "code_version": code_version(),
        "catalog_version": catalog_version(catalog),
        "created_at": utc_now(),
    }


def record_gate(ctx: RunContext, result: GateResult) -> dict[str, Path]:
    """Write a gate's reports to the store; raise if it failed."""
    ctx.gates_dir.mkdir(parents=True, exist_ok=True)
    stem = ctx.gates_dir / result.layer
    paths = {
        "json": stem.with_suffix(".json"),
        "markdown": stem.with_suffix(".md"),
        "html": stem.with_suffix(".html"),
    }
    paths["json"].write_text(result.model_dump_json(indent=2) + "\n")
    paths["markdown"].write_text(gate_markdown(result))
    paths["html"].write_text(gate_html(result))
    return paths


def _gate(ctx: RunContext, result: GateResult) -> GateResult:
    record_gate(ctx, result)
    if not result.success:
        raise GateFailed(result)
    return result


# --- ingest ------------------------------------------------------------------------------------


def ingest(ctx: RunContext, extract: Path) -> tuple[dict[str, Any], GateResult]:
    """Snapshot the extract into the raw zone (kept even when the gate fails: nothing is lost),
    then run the raw gate on it."""
    warm_up()
    catalog = ctx.catalog()
    spec = catalog.source(ctx.source)
    extract_sha = sha256_path(extract)
    source_node = {
        "sha256": extract_sha,
        "kind": "source_extract",
        "source": ctx.source,
        "path": str(extract.resolve()),
        "system": spec.system,
        "owner": spec.owner,
        "recorded_at": utc_now(),
    }
    record_lineage(ctx, source_node)
    with timed(ctx, "ingest", "read"):
        tables = read_extract(extract, spec)
    checks = suites.raw_checks(spec)
    fields = {
        **_base_manifest(ctx, catalog, "raw", "ingest"),
        "parents": [{"kind": "source_extract", "sha256": extract_sha}],
        "suite_version": suite_version(checks),
        "parameters": {"extract": str(extract.resolve())},
    }
    with timed(ctx, "ingest", "snapshot"):
        snapshot, manifest = write_snapshot(tables, ctx.store / "raw", fields)
    manifest = {**manifest, "path": str(snapshot)}
    record_lineage(ctx, manifest)
    with timed(ctx, "ingest", "gate"):
        result = run_gate(
            source=ctx.source, layer="ingest", name="raw", frames=tables, checks=checks
        )
    return manifest, _gate(ctx, result)


# --- normalize + validate ------------------------------------------------------------------------


def normalize(ctx: RunContext, raw_manifest: Mapping[str, Any], out_dir: Path) -> dict[str, Any]:
    """Tokenize and canonicalize the raw snapshot into ``out_dir`` (a KFP output artifact)."""
    catalog = ctx.catalog()
    spec = catalog.source(ctx.source)
    key = load_hmac_key()
    raw_dir = Path(raw_manifest["path"])
    with timed(ctx, "normalize", "read"):
        verify_snapshot(raw_dir)
        raw = read_tables(raw_dir)
    with timed(ctx, "normalize", "transform"):
        tables, report = normalize_extract(raw, spec, key)
    fields = {
        **_base_manifest(ctx, catalog, "normalized", "normalize"),
        "parents": [{"kind": "raw", "sha256": raw_manifest["sha256"]}],
        "hmac_key_id": key.key_id,
        "demo_key": key.demo,
        "normalize_report": report.as_dict(),
        "parameters": {},
    }
    with timed(ctx, "normalize", "write"):
        manifest = write_snapshot_at(tables, out_dir, fields)
    record_lineage(ctx, manifest, out_dir)
    return manifest


def validate(ctx: RunContext, normalized_dir: Path) -> GateResult:
    warm_up()
    catalog = ctx.catalog()
    spec = catalog.source(ctx.source)
    with timed(ctx, "validate", "read"):
        verify_snapshot(normalized_dir)
        frames = suites.split_measurement_batches(read_tables(normalized_dir), spec)
    with timed(ctx, "validate", "gate"):
        result = run_gate(
            source=ctx.source,
            layer="validate",
            name="normalized",
            frames=frames,
            checks=suites.normalized_checks(spec),
        )
    return _gate(ctx, result)


# --- features ----------------------------------------------------------------------------------


def features(
    ctx: RunContext, normalized_dir: Path, out_dir: Path
) -> tuple[dict[str, Any], GateResult]:
    warm_up()
    catalog = ctx.catalog()
    with timed(ctx, "features", "read"):
        normalized = verify_snapshot(normalized_dir)
        tables = read_tables(normalized_dir)
    fs = feature_set_for(ctx.source, ctx.use_case)
    with timed(ctx, "features", "compute"):
        frame, stats = build_features(ctx.source, tables, ctx.use_case)
    checks = suites.feature_checks(fs)
    with timed(ctx, "features", "gate"):
        result = run_gate(
            source=ctx.source,
            layer="features",
            name="features",
            frames={suites.FEATURES_BATCH: frame},
            checks=checks,
        )
    _gate(ctx, result)
    fields = {
        **_base_manifest(ctx, catalog, "features", "features"),
        "parents": [{"kind": "normalized", "sha256": normalized["sha256"]}],
        "feature_set": fs.name,
        "feature_set_version": fs.version,
        "suite_version": result.suite_version,
        # Every gate this snapshot passed, by suite version: what "validated" meant for it.
        "gate_suites": {g.layer: g.suite_version for g in load_gates(ctx).values()},
        "label": fs.label,
        "label_rate": round(float(frame[fs.label].mean()), 6),
        "cohort": stats,
        "hmac_key_id": normalized.get("hmac_key_id"),
        "parameters": {},
    }
    with timed(ctx, "features", "write"):
        manifest = write_snapshot_at({"features": frame}, out_dir, fields)
    record_lineage(ctx, manifest, out_dir)
    return manifest, result


# --- publish -----------------------------------------------------------------------------------


def publish(ctx: RunContext, features_dir: Path) -> dict[str, Any]:
    """Atomically publish the feature snapshot, only if every gate of this run passed."""
    gates = load_gates(ctx)
    required = ("ingest", "validate", "features")
    missing = [layer for layer in required if layer not in gates]
    failed = [layer for layer, g in gates.items() if not g.success]
    if missing or failed:
        raise PublishRefused(
            f"run {ctx.run_id}: refusing to publish; gates missing {missing}, failed {failed}"
        )
    manifest = verify_snapshot(features_dir)
    published = copy_snapshot(features_dir, artifacts.published_features(ctx.store))
    entry = {
        "sha256": manifest["sha256"],
        "source": ctx.source,
        "run_id": ctx.run_id,
        "feature_set_version": manifest.get("feature_set_version"),
        "path": str(published),
        "published_at": utc_now(),
    }
    append_entry(ctx.store, entry)
    return {**manifest, "published_path": str(published)}


def load_gates(ctx: RunContext) -> dict[str, GateResult]:
    gates: dict[str, GateResult] = {}
    if ctx.gates_dir.exists():
        for path in sorted(ctx.gates_dir.glob("*.json")):
            result = GateResult.model_validate_json(path.read_text())
            gates[result.layer] = result
    return gates


# --- the run record ------------------------------------------------------------------------------


def finalize_run(ctx: RunContext, expect_model: bool = False) -> dict[str, Any]:
    """Summarize a run from what its layers left in the store (used as the pipeline's exit
    handler, so a failed run is recorded too). Returns the run-summary contract. With
    ``expect_model`` the run succeeds only if a model was trained, passed its gates and was
    registered."""
    gates = load_gates(ctx)
    nodes = _run_nodes(ctx)
    published = _published_entry(ctx)
    order = {"source_extract": 0, "raw": 1, "normalized": 2, "features": 3, "split": 4, "model": 5}
    nodes.sort(key=lambda n: order.get(str(n.get("kind")), 9))
    artifacts = [
        {
            "name": str(n["kind"]),
            "path": str(n["path"]),
            "sha256": n["sha256"],
        }
        for n in nodes
    ]
    if published:
        artifacts.append(
            {"name": "published_features", "path": published["path"], "sha256": published["sha256"]}
        )
    gate_list = [gates[layer] for layer in LAYERS if layer in gates]
    status = "succeeded" if published and all(g.success for g in gate_list) else "failed"
    model_part = model_summary(ctx)
    if expect_model and status == "succeeded":
        registered = model_part.get("model", {}).get("version") is not None
        status = "succeeded" if model_part.get("model_gates_passed") and registered else "failed"
    summary = {
        "status": status,
        "run_id": ctx.run_id,
        "source": ctx.source,
        "use": ctx.use,
        "gates": [
            {
                "layer": g.layer,
                "name": g.name,
                "success": g.success,
                "failures": [f.model_dump() for f in g.failures],
            }
            for g in gate_list
        ],
        "artifacts": artifacts,
        "final_artifact_sha256": published["sha256"] if published else None,
        "nodes": [n["sha256"] for n in nodes],
        "metrics": {f"{g.layer}_checks": g.checks_run for g in gate_list}
        | {f"{g.layer}_failures": len(g.failures) for g in gate_list}
        | _row_metrics(nodes),
        "finished_at": utc_now(),
        **model_part,
    }
    path = ctx.lineage.record_run(summary)
    summary["lineage_path"] = str(path)
    return summary


def model_summary(ctx: RunContext) -> dict[str, Any]:
    """The model half of the run summary, from the files the model steps left (if any)."""
    directory = ctx.run_dir / "model"
    if not (directory / artifacts.TRAINING).exists():
        return {}
    training = json.loads((directory / artifacts.TRAINING).read_text())
    out: dict[str, Any] = {"model_sha256": training["model_sha256"]}
    if (directory / artifacts.EVALUATION).exists():
        evaluated = json.loads((directory / artifacts.EVALUATION).read_text())
        out["evaluation"] = evaluated["headline"]
        out["model_gates"] = evaluated["gates"]["gates"]
        out["model_gates_passed"] = evaluated["gates"]["passed"]
        out["evidence"] = evaluated["evidence"]
        out["test_predictions_path"] = evaluated["test_predictions_path"]
    if (directory / "registry.json").exists():
        registry = json.loads((directory / "registry.json").read_text())
        out["model"] = {k: registry[k] for k in ("name", "version", "run_id")}
    return out


def _run_nodes(ctx: RunContext) -> list[dict[str, Any]]:
    """This run's nodes, each with where this run wrote (or found) the artifact."""
    path = ctx.run_dir / "nodes.jsonl"
    if not path.exists():
        return []
    entries = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        entries[entry["sha256"]] = entry
    return [
        {**ctx.lineage.node(sha), "path": e.get("path") or str(ctx.lineage.nodes / f"{sha}.json")}
        for sha, e in entries.items()
    ]


def _published_entry(ctx: RunContext) -> dict[str, Any] | None:
    found = None
    for entry in read_entries(ctx.store):
        if entry.get("run_id") == ctx.run_id:
            found = entry
    return found


def _row_metrics(nodes: list[dict[str, Any]]) -> dict[str, int]:
    metrics = {}
    for node in nodes:
        if "tables" in node:
            rows = sum(int(t["rows"]) for t in node["tables"].values())
            metrics[f"{node['kind']}_rows"] = rows
    return metrics


def run_in_process(ctx: RunContext, extract: Path, work_dir: Path) -> dict[str, Any]:
    """The same layers in one process, in pipeline order (for tests and quick checks; the
    pipeline proper runs them as KFP components). Stops at the first failed gate."""
    error: str | None = None
    try:
        raw, _ = ingest(ctx, extract)
        normalize(ctx, raw, work_dir / "normalized")
        validate(ctx, work_dir / "normalized")
        features(ctx, work_dir / "normalized", work_dir / "features")
        publish(ctx, work_dir / "features")
    except GateFailed as exc:
        error = str(exc)
    summary = finalize_run(ctx)
    if error:
        summary["error"] = error
    return summary
