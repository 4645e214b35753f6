"""``hmlops rollout``: plan, advance, roll back and inspect a model version's stepped rollout."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hospital_mlops.cli.defaults import MODEL_NAME_HELP


def _common(p: argparse.ArgumentParser, *, acting: bool) -> None:
    p.add_argument("--model", help=MODEL_NAME_HELP)
    p.set_defaults(model_default="name")
    p.add_argument("--version", type=int, required=True, help="the candidate's registry version")
    p.add_argument("--policy", type=Path, help="default: config/rollout.yaml")
    p.add_argument("--monitoring-policy", type=Path, help="default: config/monitoring.yaml")
    p.add_argument(
        "--as-of",
        help="evaluate as of this ISO 8601 time (default: now); for replays, never the future",
    )
    p.add_argument("--actor", help="who runs this (default: $HMLOPS_ACTOR, else the OS user)")
    p.add_argument("--gitops-dir", type=Path, default=Path("out/gitops"))
    p.add_argument(
        "--image", help="serving image for the rendered overlays, by digest (…@sha256:<64 hex>)"
    )
    p.add_argument(
        "--allow-unpinned-image",
        action="store_true",
        help="accept a tag-only image for a dry run (never with --apply; the overlays say so)",
    )
    p.add_argument("--namespace", help="Kubernetes namespace for the rendered overlays")
    p.add_argument("--json", action="store_true")
    if acting:
        p.add_argument(
            "--apply", action="store_true", help="also kubectl apply the change (needs KUBECONFIG)"
        )


def _observing(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-url",
        action="append",
        default=[],
        help="the candidate predictor's Prometheus /metrics (repeat per pod)",
    )
    p.add_argument(
        "--observations",
        type=Path,
        help="JSON {latency_p99_ms, error_rate} from your own Prometheus; overrides the scrape",
    )
    p.add_argument(
        "--candidate-log",
        help="SQLAlchemy URL of the candidate's prediction log (default in shadow and silent: "
        "$HMLOPS_SHADOW_PREDICTION_LOG_URL, else the prediction log)",
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ro = sub.add_parser(
        "rollout", help="stepped rollout: shadow → silent → canary → full, with gates and rollback"
    )
    rsub = ro.add_subparsers(dest="action", required=True)
    plan = rsub.add_parser("plan", help="what advance would decide now; changes nothing")
    _common(plan, acting=False)
    _observing(plan)
    adv = rsub.add_parser("advance", help="evaluate the stage's gates and act on the decision")
    _common(adv, acting=True)
    _observing(adv)
    back = rsub.add_parser("rollback", help="roll the rollout in progress back to the champion")
    _common(back, acting=True)
    back.add_argument("--reason", required=True, help="why, for the audit log (no patient data)")
    st = rsub.add_parser("status", help="the model's rollout state and last decision")
    st.add_argument("--model", help=MODEL_NAME_HELP)
    st.set_defaults(model_default="name")
    st.add_argument("--policy", type=Path)
    st.add_argument("--json", action="store_true")
    au = rsub.add_parser("audit", help="verify the audit log's hash chain and print it")
    au.add_argument("--model", help="only this model's decisions")
    au.add_argument("--json", action="store_true")


def _as_of(text: str | None) -> datetime:
    from hospital_mlops.rollout.commands import RolloutError

    if not text:
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RolloutError(f"--as-of {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise RolloutError("--as-of needs a UTC offset (e.g. 2026-11-28T10:00:00Z)")
    return parsed.astimezone(UTC)


def _settings(args: argparse.Namespace) -> Any:
    from hospital_mlops.deploy.overlay import DEFAULT_IMAGE, DEFAULT_NAMESPACE
    from hospital_mlops.governance.config import use_case_for_model
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.rollout.commands import RolloutError, Settings, default_actor
    from hospital_mlops.rollout.policy import load_rollout_policy

    if args.version < 1:
        raise RolloutError(f"--version {args.version}: must be a registry version >= 1")
    # the model's own use case's monitoring policy (its outcome horizon, its break-downs)
    monitoring = load_monitoring_policy(args.monitoring_policy)
    case = use_case_for_model(args.model)
    return Settings(
        model=args.model,
        version=args.version,
        policy=load_rollout_policy(args.policy),
        monitoring=monitoring.for_use_case(case.id) if case else monitoring,
        actor=args.actor or default_actor(),
        as_of=_as_of(args.as_of),
        gitops_dir=args.gitops_dir,
        metrics_urls=tuple(getattr(args, "metrics_url", ()) or ()),
        observations_file=getattr(args, "observations", None),
        candidate_log_url=getattr(args, "candidate_log", None),
        image=args.image or DEFAULT_IMAGE,
        namespace=args.namespace or DEFAULT_NAMESPACE,
        apply=getattr(args, "apply", False),
        allow_unpinned_image=getattr(args, "allow_unpinned_image", False),
    )


def dispatch(args: argparse.Namespace) -> int:
    from hospital_mlops.rollout import commands

    if args.action == "audit":
        return _audit(args)
    if args.action == "status":
        return _status(args)
    settings = _settings(args)
    if args.action == "plan":
        result = commands.plan(settings)
    elif args.action == "advance":
        result = commands.advance(settings)
    else:
        result = commands.rollback(settings, args.reason)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
        return 0
    _print_result(args.action, settings, result)
    return 0


def _print_result(action: str, settings: Any, result: Any) -> None:
    d = result.decision
    verb = "would" if action == "plan" else "decided:"
    print(
        f"{settings.model} version {settings.version}: {d.stage_before} → {d.stage_after} "
        f"({verb} {d.decision}; candidate traffic {d.traffic_percent_after}%)"
    )
    for g in d.gates:
        mark = "pass" if g.passed else "FAIL"
        print(f"  gate {g.name:28} {mark}  observed {g.observed!r}  limit {g.limit!r}")
    for c in d.rollback_criteria:
        if not c.passed:
            print(f"  ROLLBACK criterion {c.name}: observed {c.observed!r}, limit {c.limit!r}")
    if result.patch_path:
        print(
            f"  GitOps change: {result.patch_path} (commit it, or it was applied: {result.applied})"
        )
    for path in result.removed:
        print(f"  removed {path} (delete it from the GitOps repository too)")
    if result.audit_seq is not None:
        print(f"  recorded as decision #{result.audit_seq} in {settings.audit_file}")


def _status(args: argparse.Namespace) -> int:
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.rollout.commands import Settings, status
    from hospital_mlops.rollout.policy import load_rollout_policy

    settings = Settings(
        model=args.model,
        version=1,
        policy=load_rollout_policy(args.policy),
        monitoring=load_monitoring_policy(),
        actor="status",
        as_of=datetime.now(UTC),
    )
    out = status(settings)
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    elif out["state"] is None:
        print(f"{args.model}: no rollout recorded")
    else:
        state = out["state"]
        print(
            f"{args.model} version {state['candidate_version']} (champion "
            f"{state['champion_version']}): {out['stage']} since {state['stage_started_at']}; "
            f"{out['decisions']} decisions recorded"
        )
    return 0


def _audit(args: argparse.Namespace) -> int:
    from hospital_mlops.rollout.audit import read_audit
    from hospital_mlops.rollout.commands import rollout_dir

    path = rollout_dir() / "audit.jsonl"
    entries = read_audit(path)
    if args.model:
        entries = [e for e in entries if e.get("model") == args.model]
    if args.json:
        print(json.dumps(entries, indent=2, default=str))
        return 0
    print(f"{path}: hash chain intact, {len(entries)} decisions")
    for e in entries:
        print(
            f"  #{e['seq']} {e['recorded_at']} {e['model']} v{e['version']} {e['command']} by "
            f"{e['actor']} ({e['decided_by']}): {e['stage_before']} → {e['stage_after']} "
            f"[{e['decision']}]"
        )
    return 0
