"""``hmlops monitor``: outcomes in, windows and alerts out."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hospital_mlops.cli.defaults import MODEL_HELP


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
    api = msub.add_parser(
        "feedback-api", help="serve the feedback API over HTTP (POST /v1/feedback) on 127.0.0.1"
    )
    api.add_argument("--port", type=int, default=8090)
    api.add_argument("--bind", default="127.0.0.1", help="0.0.0.0 inside a pod")
    rep = msub.add_parser("report", help="the monitoring run as self-contained HTML")
    rep.add_argument("--model", help=MODEL_HELP)
    rep.set_defaults(model_default="ref")
    rep.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    rep.add_argument("--out", type=Path, default=Path("out/monitoring_report.html"))
    run = msub.add_parser("run", help="per-window metrics against the baseline, and alerts")
    run.add_argument("--model", help=MODEL_HELP)
    run.set_defaults(model_default="ref")
    run.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    run.add_argument("--out", type=Path, help="also write the run as JSON here")
    run.add_argument(
        "--metrics-file", type=Path, help="write Prometheus text (a textfile collector's .prom)"
    )
    run.add_argument("--events-file", type=Path, help="append one CloudEvent per alert (JSONL)")
    run.add_argument("--json", action="store_true")
    cmp = msub.add_parser(
        "compare", help="a challenger against the champion on the recent window's outcomes"
    )
    cmp.add_argument("--challenger", type=int, required=True, help="the challenger's version")
    cmp.add_argument("--model", help=MODEL_HELP)
    cmp.set_defaults(model_default="ref")
    cmp.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    cmp.add_argument("--until", help="end of the window (ISO 8601 with offset; default now)")
    cmp.add_argument("--json", action="store_true")
    pipe = msub.add_parser("pipeline", help="the monitoring KFP pipeline")
    psub = pipe.add_subparsers(dest="pipeline_action", required=True)
    prun = psub.add_parser("run", help="run it locally with kfp.local")
    prun.add_argument("--model", help=MODEL_HELP)
    prun.set_defaults(model_default="ref")
    prun.add_argument("--out", type=Path, default=Path("out/monitoring"))
    prun.add_argument(
        "--store", type=Path, help="the feature store to retrain from (default: --out)"
    )
    prun.add_argument("--policy", type=Path, help="default: config/monitoring.yaml")
    prun.add_argument("--protocol-change", default="", help="declare a protocol change: why")
    prun.add_argument("--json", action="store_true")
    pcomp = psub.add_parser("compile", help="compile to KFP IR (strictly validated)")
    pcomp.add_argument(
        "--out", type=Path, default=Path("pipelines/compiled/monitoring_pipeline.yaml")
    )
    pcomp.add_argument("--image", help="pipeline image (default: the project's)")
    psched = psub.add_parser("schedule", help="create its recurring run on a KFP host")
    psched.add_argument("--host", required=True, help="the KFP API endpoint")
    psched.add_argument(
        "--file", type=Path, help="default: manifests/kfp/monitoring-recurring-run.yaml"
    )


def dispatch(args: argparse.Namespace) -> int:
    from hospital_mlops.inference.prediction_log import PredictionLog

    if args.action == "feedback-api":
        from hospital_mlops.cli.ports import check_port
        from serving.feedback_api import serve_feedback_api

        check_port(args.port)
        serve_feedback_api(args.port, args.bind)
        return 0

    log = PredictionLog()
    try:
        if args.action == "ingest-outcomes":
            return _ingest(log, args.input, args.json)
        if args.action == "record-feedback":
            return _feedback(log, args)
        if args.action == "report":
            return _report(log, args)
        if args.action == "compare":
            return _compare(args)
        if args.action == "pipeline":
            return _pipeline(args)
        return _run(log, args)
    finally:
        log.close()


def _ingest(log: object, path: Path, as_json: bool) -> int:
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.outcomes import ingest_outcomes, read_outcomes

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
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.feedback import record_feedback
    from hospital_mlops.monitoring.policy import load_monitoring_policy

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
        what = "already recorded" if done.replayed else f"recorded (assessment {done.assessment})"
        print(f"{what}: {done.response} for prediction {done.prediction_id} at {done.responded_at}")
    return 0


def _monitor(log: object, model: str, policy_path: Path | None) -> Any:
    from hospital_mlops.drift.store import DriftStore
    from hospital_mlops.inference.config import load_serving_config
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.monitoring.run import run_monitoring

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


def _utc_arg(text: str | None, flag: str) -> Any:
    from datetime import UTC, datetime

    from hospital_mlops.monitoring.run import MonitoringError

    if not text:
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise MonitoringError(f"{flag} {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise MonitoringError(f"{flag} needs a UTC offset (e.g. 2026-11-28T10:00:00Z)")
    return parsed.astimezone(UTC)


def _compare(args: argparse.Namespace) -> int:
    from hospital_mlops.steps.monitoring import compare

    name, _, ref = args.model.partition("@")
    policy = str(args.policy) if args.policy else ""
    result = compare(
        name, ref or "champion", args.challenger, policy, _utc_arg(args.until, "--until")
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    models = result["models"]
    diff = result["challenger_minus_champion"]
    print(
        f"{name}: version {result['challenger']} against the champion (version "
        f"{result['champion']}) on {result['rows']} predictions with outcomes, "
        f"{result['window']['since']} to {result['window']['until']}"
    )
    for metric in ("auroc", "ece", "alerts_per_100"):
        d = diff[metric]
        print(
            f"  {metric:15} champion {models['champion'][metric]['value']:.4f}  challenger "
            f"{models['challenger'][metric]['value']:.4f}  difference {d['value']:+.4f} "
            f"(95% CI {d['ci'][0]:+.4f} to {d['ci'][1]:+.4f})"
        )
    for check in result["checks"]:
        print(f"  {check['name']}: {'pass' if check['passed'] else 'FAIL'}")
    verdict = "may start" if result["challenger_fit_for_rollout"] else "may not start"
    print(f"  → its rollout {verdict} (hmlops rollout advance --version {result['challenger']})")
    return 0


def _pipeline(args: argparse.Namespace) -> int:
    from pipelines import monitoring_runner as kfp_monitoring

    if args.pipeline_action == "compile":
        path = kfp_monitoring.compile_monitoring(args.out, image=args.image)
        print(f"compiled {path}")
        return 0
    if args.pipeline_action == "schedule":
        spec = kfp_monitoring.load_recurring_run(args.file)
        package = kfp_monitoring.project_root() / spec.pipeline_package
        print(json.dumps(kfp_monitoring.schedule(args.host, spec, package), indent=2))
        return 0
    name, _, ref = args.model.partition("@")
    found = kfp_monitoring.run_monitoring_locally(
        out=args.out,
        model=name,
        ref=ref or "champion",
        store_root=args.store,
        policy_path=args.policy,
        protocol_change=args.protocol_change,
    )
    if args.json:
        print(json.dumps(found, indent=2, default=str))
        return 0
    monitoring = found.get("monitoring", {})
    decision = found.get("decision", {})
    print(
        f"monitoring run {found['run_id']}: {monitoring.get('predictions', 0)} predictions, "
        f"{len(monitoring.get('alerts', []))} alerts; report {found.get('report')}"
    )
    for trigger in decision.get("triggers", []):
        print(f"  trigger {trigger['kind']}: {trigger['detail']}")
    if decision.get("suppressed_because"):
        print(f"  retraining suppressed: {decision['suppressed_because']}")
    print(f"  retrain: {decision.get('retrain')}")
    if "comparison" in found:
        verdict = found["comparison"]["challenger_fit_for_rollout"]
        print(f"  challenger {found['comparison']['challenger']} fit for rollout: {verdict}")
    return 0
