"""``hmlops rollout plan|advance|rollback|status``: gather a stage's observations, decide with
the policy, act on the decision (GitOps overlays, optionally the cluster, the registry alias),
and record it.

Order of work, so that a failure leaves no partial state:

1. check everything that can be refused: the version is registered and passed its gates, the
   state file is possible and agrees with the audit log's last decision, the sources read;
2. decide (pure, ``gates.decide``);
3. act: render the overlays into staging, ``kubectl apply`` them (``--apply``), move the
   ``champion`` alias (into full), swap the overlays in;
4. append the decision to the audit log (fsync'd), then save the state file.

A crash between 4's two writes leaves the audit log one decision ahead of the state file; the
next command refuses and says so, rather than acting on either alone.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hospital_mlops.deploy.overlay import (
    DEFAULT_IMAGE,
    DEFAULT_NAMESPACE,
    DeployRenderError,
    check_image_pin,
)
from hospital_mlops.monitoring.policy import MonitoringPolicy
from hospital_mlops.paths import state_dir
from hospital_mlops.rollout import audit, gitops, observe
from hospital_mlops.rollout.gates import (
    Decision,
    Observations,
    RolloutState,
    StageGateResult,
    decide,
)
from hospital_mlops.rollout.policy import RolloutPolicy
from hospital_mlops.rollout.state import (
    Phase,
    RolloutRecord,
    RolloutStateError,
    StageEntry,
    load_state,
    save_state,
    state_path,
)

SHADOW_LOG_ENV = "HMLOPS_SHADOW_PREDICTION_LOG_URL"
CLOCK_TOLERANCE = timedelta(minutes=5)


class RolloutRefused(PermissionError):
    """The rollout may not proceed (governance); recorded in the audit log, nothing changed."""


class RolloutError(ValueError):
    """A bad request: unknown version, another rollout in progress, a bad time; nothing
    changed."""


def rollout_dir() -> Path:
    return state_dir() / "rollout"


def default_actor() -> str:
    return os.environ.get("HMLOPS_ACTOR") or getpass.getuser()


@dataclass(frozen=True)
class Settings:
    model: str
    version: int
    policy: RolloutPolicy
    monitoring: MonitoringPolicy
    actor: str
    as_of: datetime
    directory: Path = field(default_factory=rollout_dir)
    gitops_dir: Path = Path("out/gitops")
    metrics_urls: tuple[str, ...] = ()
    observations_file: Path | None = None
    candidate_log_url: str | None = None
    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    apply: bool = False
    allow_unpinned_image: bool = False

    @property
    def state_file(self) -> Path:
        return state_path(self.directory, self.model)

    @property
    def audit_file(self) -> Path:
        return self.directory / "audit.jsonl"


@dataclass(frozen=True)
class Registered:
    version: int
    champion: int | None
    missing_signoffs: list[str]


@dataclass
class Result:
    decision: Decision
    observations: Observations | None
    sources: dict[str, Any]
    patch_path: str | None = None
    removed: tuple[str, ...] = ()
    applied: bool = False
    audit_seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "stage_before": d.stage_before,
            "stage_after": d.stage_after,
            "decision": d.decision,
            "gates": [g.as_dict() for g in d.gates],
            "rollback_criteria": [g.as_dict() for g in d.rollback_criteria],
            "traffic_percent_after": d.traffic_percent_after,
            "patch_path": self.patch_path,
            "removed": list(self.removed),
            "applied": self.applied,
            "observations": None if self.observations is None else _obs_dict(self.observations),
            "sources": self.sources,
            "audit_seq": self.audit_seq,
        }


def _obs_dict(obs: Observations) -> dict[str, Any]:
    from dataclasses import asdict

    out = asdict(obs)
    out["alerts"] = [list(a) for a in obs.alerts]
    return out


def _registered(model: str, version: int) -> Registered:
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.config import load_governance

    try:
        mv = registry.model_version(registry.client(), model, version)
    except registry.RegistryError:
        raise RolloutError(f"model {model!r} has no registered version {version}") from None
    if mv.tags.get(registry.GATES_TAG) != "true":
        raise RolloutRefused(f"{model} version {version} did not pass its model gates")
    current = registry.champion_version(model)
    champion = int(current) if current is not None else None
    signed = registry.signoffs(mv)
    required = load_governance().required_signoffs
    return Registered(version, champion, [r for r in required if r not in signed])


def _current(settings: Settings) -> tuple[RolloutRecord | None, list[dict[str, Any]]]:
    """The model's state, checked against the audit log's last decision."""
    entries = audit.read_audit(settings.audit_file)
    record = load_state(settings.state_file, settings.policy)
    last = audit.last_action(entries, settings.model)
    if record is None and last is None:
        return None, entries
    if record is None:
        assert last is not None
        raise RolloutStateError(
            f"rollout state {settings.state_file} is missing but the audit log's decision "
            f"#{last['seq']} left {settings.model} at {last['stage_after']!r}"
        )
    expected = {
        "candidate_version": record.candidate_version,
        "phase": record.stage,
        "canary_step": record.canary_step,
        "stage_started_at": record.stage_started_at.isoformat(),
    }
    recorded = None if last is None else last.get("result_state")
    if recorded != expected:
        raise RolloutStateError(
            f"rollout state {settings.state_file} says {expected} but the audit log's last "
            f"decision for {settings.model} left {recorded}: the file was edited or a decision "
            "was not recorded; nothing acts on it (see docs/runbooks/rollback.md)"
        )
    return record, entries


def _check_as_of(settings: Settings, since: datetime | None) -> None:
    now = datetime.now(UTC)
    if settings.as_of.tzinfo is None:
        raise RolloutError("--as-of needs a UTC offset")
    if settings.as_of > now + CLOCK_TOLERANCE:
        raise RolloutError(f"--as-of {settings.as_of.isoformat()} is in the future")
    if since is not None and settings.as_of < since:
        raise RolloutError(
            f"--as-of {settings.as_of.isoformat()} is before the stage began ({since.isoformat()})"
        )


def _service(settings: Settings) -> tuple[observe.ServiceSnapshot | None, dict[str, Any]]:
    if not settings.metrics_urls:
        return None, {}
    texts = observe.scrape(list(settings.metrics_urls))
    snapshot = observe.parse_service_metrics(texts, settings.model, settings.version)
    return snapshot, {"metrics_urls": list(settings.metrics_urls)}


def _observe(
    settings: Settings, record: RolloutRecord, registered: Registered
) -> tuple[Observations, observe.ServiceSnapshot | None, dict[str, Any]]:
    import pandas as pd

    from hospital_mlops.drift.store import DriftStore
    from hospital_mlops.inference.config import load_serving_config
    from hospital_mlops.inference.prediction_log import PredictionLog
    from hospital_mlops.monitoring.alerts import alerts_for
    from hospital_mlops.monitoring.feedback import responses
    from hospital_mlops.monitoring.run import baseline_from_registry, drift_results, feed_faults
    from hospital_mlops.monitoring.windows import compute_windows

    since, until = record.stage_started_at, settings.as_of
    in_shadow = record.stage in ("shadow", "silent")
    candidate_url = settings.candidate_log_url or (
        os.environ.get(SHADOW_LOG_ENV) if in_shadow else None
    )
    sources: dict[str, Any] = {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "candidate_prediction_log": "shadow log" if candidate_url else "prediction log",
    }
    baseline, _ = baseline_from_registry(settings.model, str(settings.version))
    candidate_log = PredictionLog(candidate_url)
    champion_log = PredictionLog() if candidate_url else candidate_log
    try:
        frame = observe.stage_predictions(
            candidate_log, settings.model, settings.version, since, until, champion_log
        )
        answered = responses(candidate_log, settings.model, settings.version)
        answered = answered[(answered["scored_at"] >= since) & (answered["scored_at"] <= until)]
        if answered["response"].isna().all() and not settings.monitoring.windows.feedback_expected:
            answered = None
        agreement = None
        if in_shadow and registered.champion is not None:
            champion = observe.stage_predictions(
                champion_log, settings.model, registered.champion, since, until
            )
            agreement, pairs = observe.agreement(frame, champion)
            sources["paired_with_champion"] = pairs
    finally:
        candidate_log.close()
        if champion_log is not candidate_log:
            champion_log.close()
    store = DriftStore(load_serving_config().drift.store_url)
    try:
        drift = drift_results(store, baseline.model)
        if registered.champion is not None and registered.champion != settings.version:
            # the candidate reads the same feed as the champion, whose detector watches it: a
            # broken feed (the act tier's data faults) holds the candidate's stage too
            feed = drift_results(store, f"{settings.model}/{registered.champion}")
            drift = pd.concat([drift, feed_faults(feed)], ignore_index=True)
    finally:
        store.close()
    drift = drift[(drift["tested_at"] >= since) & (drift["tested_at"] <= until)]
    columns = ["scored_at", "risk", "alert", "outcome"]
    windows = compute_windows(
        frame[columns], baseline, settings.monitoring, drift, answered, now=until
    )
    alerts = alerts_for(windows, baseline, settings.monitoring)
    snapshot, service_sources = _service(settings)
    sources.update(service_sources)
    start = (
        observe.ServiceSnapshot.from_dict(record.metrics_at_stage_start)
        if record.metrics_at_stage_start
        else None
    )
    override = None
    if settings.observations_file is not None:
        override = observe.read_observations_file(settings.observations_file)
        sources["observations_file"] = str(settings.observations_file)
    obs = observe.observations(
        hours=(until - since).total_seconds() / 3600,
        frame=frame,
        baseline=baseline,
        policy=settings.monitoring,
        alerts=alerts,
        service=None if snapshot is None else snapshot.since(start),
        service_override=override,
        agreement_with_champion=agreement,
        responses=answered,
    )
    return obs, snapshot, sources


def _start_decision(settings: Settings, registered: Registered) -> Decision:
    if registered.champion is None:
        raise RolloutError(
            f"{settings.model} has no champion to roll version {settings.version} out against: "
            "a first version goes live through `hmlops registry promote` and "
            "`hmlops deploy render --stage production`"
        )
    if registered.champion == settings.version:
        raise RolloutError(f"{settings.model} version {settings.version} is already the champion")
    gates = [
        StageGateResult("registered_with_passed_gates", True, True, True),
        StageGateResult("not_the_champion", True, registered.champion, f"≠ {settings.version}"),
    ]
    return Decision("none", "shadow", "advance", gates, [], 0, RolloutState("shadow"))


def _phase_of(decision: Decision) -> tuple[Phase, int]:
    if decision.decision == "rollback" or decision.next_state is None:
        return "rolled_back", 0
    return decision.next_state.stage, decision.next_state.canary_step


def _evaluate(settings: Settings) -> tuple[Result, RolloutRecord | None, Registered, Any]:
    registered = _registered(settings.model, settings.version)
    record, _ = _current(settings)
    if record is not None and record.active and record.candidate_version != settings.version:
        raise RolloutError(
            f"{settings.model} version {record.candidate_version} is in its rollout "
            f"({record.stage}); finish it or roll it back before version {settings.version}"
        )
    if record is None or not record.active:
        # a new rollout (a rolled-back version may try again, e.g. after an infrastructure fix;
        # the earlier attempt stays in the audit log)
        _check_as_of(settings, None)
        snapshot, sources = _service(settings)
        start = _start_decision(settings, registered)
        return Result(start, None, sources), None, registered, snapshot
    _check_as_of(settings, record.stage_started_at)
    obs, snapshot, sources = _observe(settings, record, registered)
    state = record.position()
    decision = decide(settings.policy, state, obs, not registered.missing_signoffs)
    return Result(decision, obs, sources), record, registered, snapshot


def plan(settings: Settings) -> Result:
    """What ``advance`` would decide now; changes and records nothing."""
    result, _, _, _ = _evaluate(settings)
    return result


def _signoffs_block(result: Result) -> bool:
    return any(g.name == "registry_signoffs" and not g.passed for g in result.decision.gates)


def _entry(
    settings: Settings,
    command: str,
    result: Result,
    decided_by: str,
    changed: RolloutRecord | None,
    note: str = "",
) -> dict[str, Any]:
    body = result.as_dict()
    return {
        "model": settings.model,
        "version": settings.version,
        "command": command,
        "actor": settings.actor,
        "decided_by": decided_by,
        "as_of": settings.as_of.isoformat(),
        "policy": settings.policy.model_dump(mode="json"),
        **{k: body[k] for k in ("stage_before", "stage_after", "decision", "gates")},
        "rollback_criteria": body["rollback_criteria"],
        "observations": body["observations"],
        "sources": body["sources"],
        "action": {
            "patch_path": result.patch_path,
            "removed": list(result.removed),
            "applied": result.applied,
        },
        "note": note,
        "changed_state": changed is not None,
        "result_state": None
        if changed is None
        else {
            "candidate_version": changed.candidate_version,
            "phase": changed.stage,
            "canary_step": changed.canary_step,
            "stage_started_at": changed.stage_started_at.isoformat(),
        },
    }


def _next_record(
    settings: Settings,
    record: RolloutRecord | None,
    registered: Registered,
    phase: Phase,
    step: int,
    snapshot: observe.ServiceSnapshot | None,
) -> RolloutRecord:
    percent = settings.policy.stages.canary.steps[step] if phase == "canary" else None
    entry = StageEntry(stage=phase, canary_percent=percent, entered_at=settings.as_of)
    continuing = record is not None and record.active
    return RolloutRecord(
        model=settings.model,
        candidate_version=settings.version,
        champion_version=record.champion_version if record and continuing else registered.champion,
        stage=phase,
        canary_step=step,
        stage_started_at=settings.as_of,
        metrics_at_stage_start=None if snapshot is None else snapshot.as_dict(),
        history=(*record.history, entry) if record and continuing else (entry,),
    )


def _act(
    settings: Settings,
    command: str,
    result: Result,
    record: RolloutRecord | None,
    registered: Registered,
    snapshot: observe.ServiceSnapshot | None,
    decided_by: str,
    note: str = "",
) -> Result:
    if result.decision.decision == "hold":
        written = audit.append_audit(
            settings.audit_file, _entry(settings, command, result, decided_by, None, note)
        )
        result.audit_seq = written["seq"]
        return result
    phase, step = _phase_of(result.decision)
    nxt = _next_record(settings, record, registered, phase, step, snapshot)
    target = gitops.Target(
        phase,
        settings.version,
        nxt.champion_version,
        settings.policy.stages.canary.steps[step] if phase == "canary" else None,
    )
    change = gitops.change_for(target, record.stage if record and record.active else None)
    from hospital_mlops.governance import registry

    champion_before = registry.champion_version(settings.model) if phase == "full" else None
    if phase == "full":
        _promote(settings)
    try:
        written_change = gitops.write_change(
            settings.gitops_dir,
            settings.model,
            change,
            apply=settings.apply,
            image=settings.image,
            namespace=settings.namespace,
            allow_unpinned_image=settings.allow_unpinned_image,
        )
    except BaseException:
        # The overlay did not land (render or apply failed): the registry must not name a
        # champion the cluster does not serve. Nothing was recorded; the step can be rerun.
        if phase == "full":
            _restore_champion(settings.model, champion_before)
        raise
    result.patch_path = written_change.patch_path
    result.removed = written_change.removed
    result.applied = written_change.applied
    written = audit.append_audit(
        settings.audit_file, _entry(settings, command, result, decided_by, nxt, note)
    )
    save_state(settings.state_file, nxt)
    result.audit_seq = written["seq"]
    return result


def _check_image(settings: Settings) -> None:
    """Before deciding anything: the overlays a rollout writes go to clinicians, so their image
    is pinned by digest (a dry run without --apply may opt out), and --apply needs a cluster."""
    try:
        check_image_pin(
            settings.image,
            "production",
            allow_unpinned=settings.allow_unpinned_image and not settings.apply,
        )
    except DeployRenderError as exc:
        raise RolloutError(str(exc)) from None
    if settings.apply:
        gitops.require_kubeconfig()


def _restore_champion(model: str, version: str | None) -> None:
    from hospital_mlops.governance import registry

    c = registry.client()
    if version is None:
        c.delete_registered_model_alias(model, "champion")
    else:
        c.set_registered_model_alias(model, "champion", version)


def _promote(settings: Settings) -> None:
    from hospital_mlops.governance import registration
    from hospital_mlops.governance.config import load_governance

    registration.promote(
        settings.model, settings.version, "champion", load_governance().required_signoffs
    )


def advance(settings: Settings) -> Result:
    """Decide and act: start the rollout in shadow, advance, hold or roll back."""
    _check_image(settings)
    result, record, registered, snapshot = _evaluate(settings)
    if _signoffs_block(result) and result.decision.decision == "hold":
        entry = _entry(settings, "advance", result, "policy", None, "missing sign-offs")
        audit.append_audit(settings.audit_file, {**entry, "decision": "refused"})
        raise RolloutRefused(
            f"{settings.model} version {settings.version} cannot enter "
            f"{settings.policy.signoffs_required_from} or later without every registry "
            f"sign-off; missing: {', '.join(registered.missing_signoffs)} "
            f"(hmlops registry sign-off --model {settings.model} --version {settings.version} "
            "--role ROLE --by NAME)"
        )
    return _act(settings, "advance", result, record, registered, snapshot, "policy")


def rollback(settings: Settings, reason: str) -> Result:
    """An operator's rollback of the rollout in progress, whatever its gates say."""
    if not reason.strip():
        raise RolloutError("a rollback needs a --reason for the audit log")
    _check_image(settings)
    registered = _registered(settings.model, settings.version)
    record, _ = _current(settings)
    if record is None or not record.active or record.candidate_version != settings.version:
        raise RolloutError(
            f"{settings.model} version {settings.version} has no rollout in progress to roll back"
        )
    _check_as_of(settings, record.stage_started_at)
    before = record.position().label(settings.policy)
    decision = Decision(
        before,
        "rolled back",
        "rollback",
        [],
        [StageGateResult("operator", False, reason.strip()[:500], "rollback requested")],
        0,
        None,
    )
    result = Result(decision, None, {"operator": settings.actor})
    return _act(
        settings, "rollback", result, record, registered, None, "operator", reason.strip()[:500]
    )


def status(settings: Settings) -> dict[str, Any]:
    record, entries = _current(settings)
    mine = [e for e in entries if e.get("model") == settings.model]
    return {
        "model": settings.model,
        "state": None if record is None else record.model_dump(mode="json"),
        "stage": None
        if record is None
        else (record.position().label(settings.policy) if record.active else record.stage),
        "decisions": len(mine),
        "last_decision": None
        if not mine
        else {
            k: mine[-1][k]
            for k in (
                "seq",
                "recorded_at",
                "command",
                "actor",
                "decided_by",
                "decision",
                "stage_before",
                "stage_after",
            )
        },
    }
