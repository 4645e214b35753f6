"""``hmlops monitor``: outcomes in, windows and alerts out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mon = sub.add_parser("monitor", help="monitoring: join outcomes, compute windows and alerts")
    msub = mon.add_subparsers(dest="action", required=True)
    ing = msub.add_parser(
        "ingest-outcomes", help="join 30-day outcomes (CSV/Parquet) to logged predictions"
    )
    ing.add_argument("--input", type=Path, required=True, help="encounter_token, readmitted_30d")
    ing.add_argument("--json", action="store_true")
    fb = msub.add_parser(
        "record-feedback", help="record a clinician's response to an alert, by prediction id"
    )
    fb.add_argument("--prediction-id", required=True)
    fb.add_argument("--response", required=True, choices=["acknowledged", "acted_on", "overridden"])
    fb.add_argument("--responded-at", required=True, help="ISO 8601 with a UTC offset")
    fb.add_argument("--reason", help="required for overridden")
    fb.add_argument("--source", default="cli", help="where the response came from")
    fb.add_argument("--json", action="store_true")
    rep = msub.add_parser("report", help="the monitoring run as self-contained HTML")
    rep.add_argument("--model", default="readmission-30d@champion", help="NAME@ALIAS or NAME@N")
    rep.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    rep.add_argument("--out", type=Path, default=Path("out/monitoring_report.html"))
    run = msub.add_parser("run", help="per-window metrics against the baseline, and alerts")
    run.add_argument("--model", default="readmission-30d@champion", help="NAME@ALIAS or NAME@N")
    run.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    run.add_argument("--out", type=Path, help="also write the run as JSON here")
    run.add_argument(
        "--metrics-file", type=Path, help="write Prometheus text (a textfile collector's .prom)"
    )
    run.add_argument("--events-file", type=Path, help="append one CloudEvent per alert (JSONL)")
    run.add_argument("--json", action="store_true")


def dispatch(args: argparse.Namespace) -> int:
    from hospital_mlops.prediction_log import PredictionLog

    log = PredictionLog()
    try:
        if args.action == "ingest-outcomes":
            return _ingest(log, args.input, args.json)
        if args.action == "record-feedback":
            return _feedback(log, args)
        if args.action == "report":
            return _report(log, args)
        return _run(log, args)
    finally:
        log.close()


def _ingest(log: object, path: Path, as_json: bool) -> int:
    from hospital_mlops.monitoring.outcomes import ingest_outcomes, read_outcomes
    from hospital_mlops.prediction_log import PredictionLog

    assert isinstance(log, PredictionLog)
    frame, digest = read_outcomes(path)
    done = ingest_outcomes(log, frame, digest, source=str(path))
    if as_json:
        print(json.dumps(done.as_dict(), indent=2))
    else:
        print(
            f"{done.rows} outcomes from {path} (sha256 {digest[:12]}…): {done.new} new, "
            f"{done.already_known} already known; {done.predictions_joined} predictions joined"
        )
    return 0


def _feedback(log: object, args: argparse.Namespace) -> int:
    from hospital_mlops.monitoring.feedback import record_feedback
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.prediction_log import PredictionLog

    assert isinstance(log, PredictionLog)
    done = record_feedback(
        log,
        args.prediction_id,
        args.response,
        args.responded_at,
        override_reason=args.reason,
        allowed_reasons=load_monitoring_policy().feedback.override_reasons,
        source=args.source,
    )
    if args.json:
        print(json.dumps(done.as_dict(), indent=2))
    else:
        print(
            f"recorded {done.response} for prediction {done.prediction_id} at {done.responded_at}"
        )
    return 0


def _monitor(log: object, model: str, policy_path: Path | None) -> Any:
    from hospital_mlops.drift_store import DriftStore
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.monitoring.run import run_monitoring
    from hospital_mlops.prediction_log import PredictionLog
    from hospital_mlops.serving_config import load_serving_config

    assert isinstance(log, PredictionLog)
    name, _, ref = model.partition("@")
    policy = load_monitoring_policy(policy_path)
    store = DriftStore(load_serving_config().drift.store_url)
    try:
        return run_monitoring(name, ref or "champion", policy, log, store)
    finally:
        store.close()


def _report(log: object, args: argparse.Namespace) -> int:
    from hospital_mlops.monitoring.report import monitoring_html

    result = _monitor(log, args.model, args.policy)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(monitoring_html(result.as_dict()), encoding="utf-8")
    print(f"wrote {args.out} ({len(result.windows)} windows, {len(result.alerts)} alerts)")
    return 0


def _run(log: object, args: argparse.Namespace) -> int:
    result = _monitor(log, args.model, args.policy)
    summary = result.as_dict()
    if args.metrics_file or args.events_file:
        from hospital_mlops.monitoring.publish import alert_events, prometheus_text

        if args.metrics_file:
            args.metrics_file.parent.mkdir(parents=True, exist_ok=True)
            partial = args.metrics_file.with_suffix(".partial")
            partial.write_text(prometheus_text(summary))
            partial.replace(args.metrics_file)  # a collector never reads half a file
        if args.events_file:
            args.events_file.parent.mkdir(parents=True, exist_ok=True)
            with args.events_file.open("a", encoding="utf-8") as handle:
                for event in alert_events(summary):
                    handle.write(json.dumps(event) + "\n")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{result.model}: {result.predictions} predictions, {result.with_outcomes} with outcomes, "
        f"{len(result.windows)} windows; baseline AUROC {result.baseline.auroc:.3f}"
    )
    for w in result.windows:
        realized = f"AUROC {w.auroc:.3f}" if w.auroc is not None else "AUROC (no outcomes yet)"
        print(
            f"  {w.start} n={w.n} {realized} est. {w.estimated_auroc:.3f} "
            f"alerts/100 {w.alerts_per_100:.1f} score drift {w.score_drift} "
            f"data drift {w.data_drift} answered {w.acknowledgement_rate} "
            f"overridden {w.override_rate}"
        )
    for a in result.alerts:
        print(f"  ALERT [{a.severity}] {a.kind} → {a.owner}: {a.message}")
    if not result.alerts:
        print("  no alerts")
    return 0
