"""The model half of the pipeline as plain functions over paths: train → evaluate → gate →
register. Each KFP component calls one of these; ``run_model_in_process`` runs them in order.

Files each step leaves in ``runs/<run_id>/model/`` (read by ``stages.finalize_run``):
  training.json    split summary, thresholds, model hash, comparator
  evaluation.json  the full evaluation (recomputable from test_predictions.parquet)
  gates.json       the model gates and whether they passed
  registry.json    the MLflow run, and the registered version when the gates passed
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.data.lineage import code_version, utc_now
from hospital_mlops.data.snapshots import read_tables, sha256_file, verify_snapshot
from hospital_mlops.data.splits import (
    ERA,
    TemporalSplit,
    era_labels,
    extra_slices,
    split_sha256,
    temporal_split,
)
from hospital_mlops.drift.reference import (
    BASELINE_FILE,
    REFERENCE_FILE,
    calibrate_reference,
    read_reference,
    write_baseline,
    write_reference,
)
from hospital_mlops.features import feature_set_for
from hospital_mlops.governance import hti1, model_card
from hospital_mlops.governance.config import load_governance
from hospital_mlops.governance.evidence import EvidenceContext
from hospital_mlops.governance.validation_report import validation_html, validation_markdown
from hospital_mlops.inference.config import load_serving_config
from hospital_mlops.model.evaluate.evaluation import (
    COMPARATOR_SCORE,
    LABEL,
    SCORE,
    evaluate_predictions,
    headline,
    thresholds_from_validation,
)
from hospital_mlops.model.evaluate.gates import check_model_gates, justification_records
from hospital_mlops.model.evaluate.subgroups import group_labels
from hospital_mlops.model.train import Comparator, RiskModel, train_comparator, train_risk_model
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.steps.data import RunContext, record_lineage, timed
from hospital_mlops.use_case import SourceUse, UseCase, load_use_case

GOLDEN_ROWS = 200


def model_dir(ctx: RunContext) -> Path:
    return ctx.run_dir / "model"


def _write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def train(ctx: RunContext, features_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Split the published snapshot by time, train the model and its comparator, and write the
    model, test predictions and golden rows to ``out_dir``."""
    use_case = load_use_case(use_case=ctx.use_case)
    source_use = use_case.for_source(ctx.source)
    fs = feature_set_for(ctx.source, ctx.use_case)
    with timed(ctx, "train", "read"):
        snapshot = verify_snapshot(features_dir)
        frame = read_tables(features_dir)["features"]
    split = temporal_split(frame, source_use.split, fs.label)
    split_manifest = {
        "kind": "split",
        "layer": "train",
        "source": ctx.source,
        "run_id": ctx.run_id,
        "parents": [{"kind": "features", "sha256": snapshot["sha256"]}],
        "policy": source_use.split.model_dump(mode="json"),
        "periods": split.summary,
        "embargoed_rows": split.embargoed_rows,
        "use_case_version": use_case.content_version,
        "code_version": code_version(),
        "created_at": utc_now(),
    }
    split_manifest["sha256"] = split_sha256(snapshot["sha256"], source_use.split)
    record_lineage(ctx, split_manifest)
    with timed(ctx, "train", "fit"):
        model = train_risk_model(split.train, split.validation, fs, use_case.training)
        comparator = train_comparator(split.train, source_use.comparator, fs.label)
    out_dir.mkdir(parents=True, exist_ok=True)
    with timed(ctx, "train", "predict+write"):
        return _write_training(
            ctx, use_case, out_dir, model, comparator, split, split_manifest, snapshot
        )


def _write_training(
    ctx: RunContext,
    use_case: UseCase,
    out_dir: Path,
    model: RiskModel,
    comparator: Comparator,
    split: TemporalSplit,
    split_manifest: dict[str, Any],
    snapshot: dict[str, Any],
) -> dict[str, Any]:
    source_use = use_case.for_source(ctx.source)
    fs = feature_set_for(ctx.source, ctx.use_case)
    model_hash = model.save(out_dir / "risk_model")
    thresholds = thresholds_from_validation(model.predict_risk(split.validation, fs), use_case)

    test = split.test
    keep = {s.column for s in source_use.subgroups.values()} | set(source_use.extra_slices)
    predictions = pd.DataFrame(
        {
            "encounter_token": test["encounter_token"],
            "patient_token": test["patient_token"],
            LABEL: test[fs.label].astype("int64"),
            SCORE: model.predict_risk(test, fs),
            COMPARATOR_SCORE: comparator.predict_risk(test),
            **{c: test[c] for c in sorted(keep) if c in test.columns},
        }
    )
    if ERA in source_use.extra_slices:
        predictions[ERA] = era_labels(test, source_use.split).to_numpy()
    predictions.to_parquet(out_dir / artifacts.TEST_PREDICTIONS, index=False)
    feature_names = [f.name for f in fs.features]
    golden = test[feature_names].head(GOLDEN_ROWS).reset_index(drop=True)
    golden["expected_risk"] = predictions[SCORE].head(GOLDEN_ROWS).to_numpy()
    golden.to_parquet(out_dir / artifacts.GOLDEN, index=False)
    # What the drift detector compares served encounters with: the newest validated period, which
    # is what deployment follows. Registered as evidence so a version carries its own baseline.
    serving = load_serving_config()
    write_reference(
        out_dir / REFERENCE_FILE,
        test,
        model,
        fs,
        serving.drift.reference_rows,
        slice_name="test",
        order_by=source_use.split.time_column,
    )
    # Its alert thresholds, calibrated on the same rows' consecutive windows at the monitoring
    # policy's declared false-alarm rate, and kept beside it (docs/drift.md).
    alerting = load_monitoring_policy().drift
    write_baseline(
        out_dir / BASELINE_FILE,
        calibrate_reference(
            read_reference(out_dir / REFERENCE_FILE),
            fs,
            serving.drift.window,
            false_alarm_rate=alerting.false_alarm_rate,
            tiers=dict(alerting.tiers),
            rules=alerting.faults.rules(),
        ),
    )

    representativeness = {
        name: {
            period: group_labels(split.period(period), name, sub)
            .value_counts(normalize=True)
            .round(4)
            .to_dict()
            for period in ("train", "test")
        }
        for name, sub in source_use.subgroups.items()
    }
    training = {
        "created_at": utc_now(),
        "representativeness": representativeness,
        "model_sha256": model_hash,
        "features_sha256": snapshot["sha256"],
        "split_sha256": split_manifest["sha256"],
        "feature_set_version": fs.version,
        "use_case": use_case.id,
        "use_case_version": use_case.content_version,
        "best_iteration": model.best_iteration,
        "calibration": model.calibration.__dict__,
        "params": model.params,
        "comparator": comparator.as_dict(),
        "thresholds": thresholds,
        "split": split.summary,
        "embargoed_rows": split.embargoed_rows,
    }
    _write_json(out_dir / artifacts.TRAINING, training)
    _write_json(model_dir(ctx) / artifacts.TRAINING, training)
    record_lineage(
        ctx,
        {
            "kind": "model",
            "layer": "train",
            "sha256": model_hash,
            "source": ctx.source,
            "run_id": ctx.run_id,
            "parents": [
                {"kind": "features", "sha256": snapshot["sha256"]},
                {"kind": "split", "sha256": split_manifest["sha256"]},
            ],
            "feature_set_version": fs.version,
            "training": {k: training[k] for k in ("best_iteration", "params", "calibration")},
            "code_version": code_version(),
            "created_at": utc_now(),
        },
        out_dir / "risk_model",
    )
    return training


def evaluate(ctx: RunContext, train_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Evaluate on the test slice, check the gates and write the validation report."""
    use_case = load_use_case(use_case=ctx.use_case)
    source_use = use_case.for_source(ctx.source)
    training = json.loads((train_dir / artifacts.TRAINING).read_text())
    predictions = pd.read_parquet(train_dir / artifacts.TEST_PREDICTIONS)
    slices = extra_slices(predictions, source_use.extra_slices) if source_use.extra_slices else None
    with timed(ctx, "evaluate", "bootstrap"):
        evaluation = evaluate_predictions(
            predictions, training["thresholds"], use_case, source_use, slices
        )
    with timed(ctx, "evaluate", "gates+report"):
        return _gate_and_report(ctx, use_case, source_use, training, train_dir, out_dir, evaluation)


def _gate_and_report(
    ctx: RunContext,
    use_case: UseCase,
    source_use: SourceUse,
    training: dict[str, Any],
    train_dir: Path,
    out_dir: Path,
    evaluation: dict[str, Any],
) -> dict[str, Any]:
    evaluated_on = datetime.now(UTC).date()
    policy = use_case.subgroup_policy
    gates = check_model_gates(evaluation, source_use.gates, policy, evaluated_on)
    passed = all(g.passed for g in gates)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / artifacts.EVALUATION, evaluation)
    gate_record = {
        "passed": passed,
        "gates": [g.as_dict() for g in gates],
        "evaluated_on": evaluated_on.isoformat(),
        **use_case.gates_declaration(evaluated_on),
        "justifications": justification_records(evaluation["subgroup_flags"], policy, evaluated_on),
    }
    _write_json(out_dir / artifacts.GATES, gate_record)
    context = {
        "source": ctx.source,
        "run_id": ctx.run_id,
        "use_case": use_case,
        "training": training,
        "code_version": code_version(),
    }
    (out_dir / artifacts.VALIDATION_REPORT_HTML).write_text(
        validation_html(evaluation, gate_record, context), encoding="utf-8"
    )
    (out_dir / artifacts.VALIDATION_REPORT_MD).write_text(
        validation_markdown(evaluation, gate_record, context), encoding="utf-8"
    )
    evidence_ctx = EvidenceContext(
        source=ctx.source,
        run_id=ctx.run_id,
        use_case=use_case,
        governance=load_governance(),
        feature_set=feature_set_for(ctx.source, ctx.use_case),
        training=training,
        evaluation=evaluation,
        gates=gate_record,
        code_version=code_version(),
    )
    document = model_card.card(evidence_ctx)
    attributes = hti1.source_attributes(evidence_ctx)
    _write_json(out_dir / artifacts.MODEL_CARD_JSON, document)
    (out_dir / artifacts.MODEL_CARD_XML).write_text(model_card.card_xml(document), encoding="utf-8")
    (out_dir / artifacts.MODEL_CARD_HTML).write_text(
        model_card.card_html(document, attributes), encoding="utf-8"
    )
    _write_json(out_dir / artifacts.HTI1_ATTRIBUTES, attributes)
    evidence = {
        name: str(out_dir / name)
        for name in (
            artifacts.VALIDATION_REPORT_HTML,
            artifacts.VALIDATION_REPORT_MD,
            artifacts.EVALUATION,
            artifacts.GATES,
            artifacts.MODEL_CARD_HTML,
            artifacts.MODEL_CARD_JSON,
            artifacts.MODEL_CARD_XML,
            artifacts.HTI1_ATTRIBUTES,
        )
    }
    evidence[artifacts.TRAINING] = str(train_dir / artifacts.TRAINING)
    evidence[artifacts.TEST_PREDICTIONS] = str(train_dir / artifacts.TEST_PREDICTIONS)
    evidence[REFERENCE_FILE] = str(train_dir / REFERENCE_FILE)
    evidence[BASELINE_FILE] = str(train_dir / BASELINE_FILE)
    summary = {
        "headline": headline(evaluation),
        "gates": gate_record,
        "evidence": [
            {"name": name, "path": path, "sha256": sha256_file(Path(path))}
            for name, path in evidence.items()
        ],
        "test_predictions_path": str(train_dir / artifacts.TEST_PREDICTIONS),
    }
    _write_json(model_dir(ctx) / artifacts.EVALUATION, summary)
    return summary


def register(ctx: RunContext, train_dir: Path, eval_dir: Path) -> dict[str, Any]:
    """Log the run with its evidence; register a version only if every gate passed."""
    from hospital_mlops.governance.registration import Candidate, log_candidate

    governance = load_governance()
    use_case = load_use_case(use_case=ctx.use_case)
    training = json.loads((train_dir / artifacts.TRAINING).read_text())
    summary = json.loads((model_dir(ctx) / artifacts.EVALUATION).read_text())
    gates = json.loads((eval_dir / artifacts.GATES).read_text())
    golden = pd.read_parquet(train_dir / artifacts.GOLDEN)
    model = RiskModel.load(train_dir / "risk_model")
    split = {p["period"]: p for p in training["split"]}
    candidate = Candidate(
        model_dir=train_dir / "risk_model",
        evidence={e["name"]: Path(e["path"]) for e in summary["evidence"]},
        params={
            "source": ctx.source,
            "feature_set_version": training["feature_set_version"],
            "best_iteration": training["best_iteration"],
            **{f"xgb.{k}": v for k, v in training["params"].items()},
        },
        metrics={
            k: float(v)
            for k, v in summary["headline"].items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        },
        tags={
            "intended_use": use_case.intended_use[:4000],
            "use_case": use_case.id,
            "source": ctx.source,
            "owner": governance.owner.clinical_owner or "MISSING (config/governance.yaml)",
            "training_data.range": f"{split['train']['start']} … {split['train']['end']}",
            "test_data.range": f"{split['test']['start']} … {split['test']['end']}",
            "lineage.features_sha256": training["features_sha256"],
            "lineage.split_sha256": training["split_sha256"],
            "lineage.model_sha256": training["model_sha256"],
            "lineage.run_id": ctx.run_id,
            "feature_set_version": training["feature_set_version"],
            "risk_assessment": governance.risk_assessment[:4000],
            "explanation_method": "exact TreeSHAP (XGBoost pred_contribs) on log-odds",
            "monitoring_links": json.dumps(governance.monitoring_links, sort_keys=True),
            "gates": json.dumps({g["name"]: g["passed"] for g in gates["gates"]}, sort_keys=True),
            "code_version": json.dumps(code_version(), sort_keys=True),
        },
        gates_passed=bool(gates["passed"]),
        input_example=golden.drop(columns=["expected_risk"]).head(5),
        golden=golden,
    )
    del model  # loaded to prove the saved model opens before anything is registered
    result = log_candidate(use_case.model_name or governance.registered_model_name, candidate)
    _write_json(model_dir(ctx) / "registry.json", result)
    return result


def run_model_in_process(ctx: RunContext, features_dir: Path, work_dir: Path) -> dict[str, Any]:
    train(ctx, features_dir, work_dir / "train")
    evaluate(ctx, work_dir / "train", work_dir / "evaluate")
    return register(ctx, work_dir / "train", work_dir / "evaluate")
