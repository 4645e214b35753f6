"""`hmlops rollout` on the real registry: the rerun's version rolls out against the champion
through shadow and silent (paired with the champion's answers on the same requests), is refused
canary until signed off, and rolls back when its calibration decays in canary. Time is a replay:
predictions carry their simulated scoring times and each decision is taken ``--as-of`` one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.integration.conftest import REVIEW_ROLES, hmlops, hmlops_here

MODEL = "readmission-30d"
# what a release pipeline hands the rollout: the serving image by digest
RELEASED_IMAGE = "registry.hospital.example/hospital-mlops/serving@sha256:" + "5e" * 32
T0 = pd.Timestamp("2026-01-01T00:00:00Z")


def _at(days: float) -> str:
    return (T0 + pd.Timedelta(days=days)).isoformat().replace("+00:00", "Z")


class Replay:
    """Scores real test-period encounters with a registered version and logs them with their
    simulated times, as the predictor does (``records``); outcomes drawn from the risk."""

    def __init__(self, main: str, shadow: str, champion: int, candidate: int) -> None:
        from hospital_mlops.features import feature_set_for, served_inputs
        from hospital_mlops.governance import registry
        from hospital_mlops.inference.registered_examples import registered_examples

        self.urls = {"main": main, "shadow": shadow}
        self.fs = feature_set_for("diabetes130")
        self.served = served_inputs(self.fs)
        self.models = {v: registry.load_risk_model(MODEL, str(v)) for v in (champion, candidate)}
        self.instances = registered_examples(MODEL, str(champion), n=4100, seed=11)
        self.next = 0
        self.rng = np.random.default_rng(5)

    def score(self, version: int, where: str, batch: list[dict], times: list[str], ids: list[str]):
        from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
        from hospital_mlops.model.scoring import score

        loaded = self.models[version]
        threshold = float(loaded.training["thresholds"]["discharge_planning"])
        served = ServedModel(MODEL, version, loaded.sha256, self.fs.version, "", "diabetes130")
        answers = []
        for start in range(0, len(batch), 100):  # the predictor's per-request limit
            answers += score(
                batch[start : start + 100],
                self.served,
                loaded.model,
                threshold,
                f"{MODEL}/{version}",
            )
        rows = []
        for instance, answer, when, request_id in zip(batch, answers, times, ids, strict=True):
            answer["scored_at"] = when
            rows.extend(records(request_id, "v1", served, [instance], [answer]))
        log = PredictionLog(self.urls[where])
        log.write(rows)
        log.close()
        return rows

    def encounters(self, n: int, start_days: float, end_days: float):
        batch = [dict(i) for i in self.instances[self.next : self.next + n]]
        for k, instance in enumerate(batch):
            instance["encounter_token"] = f"roll{self.next + k:020d}"
        self.next += n
        seconds = np.sort(self.rng.uniform(start_days * 86400, end_days * 86400, n))
        times = [_at(s / 86400) for s in seconds]
        ids = [f"req-{i['encounter_token']}" for i in batch]
        return batch, times, ids

    def outcomes(self, rows: list[dict], share: float, inflate: float, path: Path) -> Path:
        keep = rows[: int(len(rows) * share)]
        risk = np.array([r["risk"] for r in keep])
        y = (self.rng.random(len(keep)) < np.clip(risk * inflate, 0, 1)).astype(int)
        pd.DataFrame(
            {"encounter_token": [r["encounter_token"] for r in keep], "readmitted_30d": y}
        ).to_csv(path, index=False)
        return path


@pytest.fixture(scope="module")
def rollout_env(d130_runs, d130_champion, tmp_path_factory, module_new_store_url):
    """Both logs (SQLite, then PostgreSQL) and the GitOps directory of this module; the rerun's
    version unsigned. Afterwards the registry's champion and the rollout state are put back, so
    the module runs again on the other backend from the same start."""
    from hospital_mlops.governance import registry

    _, _, second, _, _ = d130_runs
    candidate = int(second["model"]["version"])
    c = registry.client()
    for role in REVIEW_ROLES:  # test_pipeline_kfp may have signed it already
        c.delete_model_version_tag(MODEL, str(candidate), f"{registry.SIGNOFF_PREFIX}{role}")
    root = tmp_path_factory.mktemp("rollout")
    main, shadow = module_new_store_url("main"), module_new_store_url("shadow")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HMLOPS_PREDICTION_LOG_URL", main)
        patch.setenv("HMLOPS_SHADOW_PREDICTION_LOG_URL", shadow)
        replay = Replay(main, shadow, d130_champion, candidate)
        start = len(_audit({"audit_start": 0}))
        try:
            yield {
                "root": root,
                "candidate": candidate,
                "champion": d130_champion,
                "replay": replay,
                "audit_start": start,
            }
        finally:
            c.set_registered_model_alias(MODEL, "champion", str(d130_champion))
            _state_file().unlink(missing_ok=True)


def _rollout(env, action: str, *args: str) -> subprocess.CompletedProcess[str]:
    return hmlops_here(
        "rollout", action, "--model", MODEL, "--version", str(env["candidate"]),
        "--gitops-dir", str(env["root"] / "gitops"), "--actor", "test-operator",
        "--image", RELEASED_IMAGE, *args,
    )  # fmt: skip


def _json(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _audit(env) -> list[dict]:
    """This module's entries: the session's log may hold other tests' rollouts before them."""
    from hospital_mlops.rollout.audit import read_audit
    from hospital_mlops.rollout.commands import rollout_dir

    return read_audit(rollout_dir() / "audit.jsonl")[env["audit_start"] :]


def _state_file() -> Path:
    from hospital_mlops.rollout.commands import rollout_dir

    return rollout_dir() / f"{MODEL}.state.json"


def _build(directory: Path) -> list[dict]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return list(yaml.safe_load_all(built.stdout))


def _isvc(directory: Path, name: str) -> dict:
    return next(
        d
        for d in _build(directory)
        if d["kind"] == "InferenceService" and d["metadata"]["name"] == name
    )


def _pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "InferenceService":
        return [doc["spec"][part] for part in ("predictor", "explainer") if part in doc["spec"]]
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    return []


@pytest.fixture(scope="module")
def walked(rollout_env):
    """Shadow, then silent, with the evidence each needs; every step's output kept."""
    env, replay = rollout_env, rollout_env["replay"]
    steps: dict = {}
    steps["start"] = _json(_rollout(env, "advance", "--as-of", _at(0), "--json"))
    batch, times, ids = replay.encounters(1200, 0.05, 6.9)
    champion_rows = replay.score(env["champion"], "main", batch, times, ids)
    replay.score(env["candidate"], "shadow", batch, times, ids)
    steps["early_plan"] = _json(_rollout(env, "plan", "--as-of", _at(3), "--json"))
    steps["audit_after_plan"] = len(_audit(env))
    observed = env["root"] / "observations.json"
    observed.write_text(json.dumps({"latency_p99_ms": 8.5, "error_rate": 0.0}))
    steps["silent"] = _json(
        _rollout(env, "advance", "--as-of", _at(7), "--observations", str(observed), "--json")
    )
    batch, times, ids = replay.encounters(2100, 7.05, 20.5)
    champion_rows += replay.score(env["champion"], "main", batch, times, ids)
    replay.score(env["candidate"], "shadow", batch, times, ids)
    clean = replay.outcomes(champion_rows, 0.6, 1.0, env["root"] / "outcomes-clean.csv")
    ingested = hmlops_here("monitor", "ingest-outcomes", "--input", str(clean))
    assert ingested.returncode == 0, ingested.stderr
    steps["observed"] = observed
    return steps


def test_a_rollout_starts_in_shadow_with_the_shadow_overlay(rollout_env, walked) -> None:
    start = walked["start"]
    assert (start["stage_before"], start["stage_after"], start["decision"]) == (
        "none",
        "shadow",
        "advance",
    )
    assert {"name", "passed", "observed", "limit"} == set(start["gates"][0])
    shadow_dir = Path(start["patch_path"]).parent
    assert shadow_dir == rollout_env["root"] / "gitops" / MODEL / "shadow"
    shadow = _isvc(shadow_dir, "readmission-shadow")
    assert (
        f"{MODEL}@{rollout_env['candidate']}"
        in shadow["spec"]["predictor"]["containers"][0]["args"]
    )


def test_a_plan_names_the_gates_that_hold_and_records_nothing(walked) -> None:
    plan = walked["early_plan"]
    assert plan["decision"] == "hold" and plan["stage_after"] == "shadow"
    failed = {g["name"] for g in plan["gates"] if not g["passed"]}
    assert "min_hours" in failed and "latency_p99_ms" in failed  # no latency source given
    agreement = next(g for g in plan["gates"] if g["name"] == "agreement_with_champion")
    assert agreement["passed"] and agreement["observed"] == 1.0  # the same model, re-run
    assert plan["patch_path"] is None and plan["audit_seq"] is None
    assert walked["audit_after_plan"] == 1


def test_shadow_advances_to_silent_on_its_evidence(rollout_env, walked) -> None:
    silent = walked["silent"]
    assert (silent["stage_before"], silent["stage_after"], silent["decision"]) == (
        "shadow",
        "silent",
        "advance",
    )
    assert all(g["passed"] for g in silent["gates"]), silent["gates"]
    assert silent["observations"]["predictions"] == 1200
    assert silent["sources"]["paired_with_champion"] == 1200
    assert silent["patch_path"] is None  # silent runs on the same shadow add-on
    mid = hmlops_here(
        "registry", "retire", "--model", MODEL, "--version", str(rollout_env["candidate"]),
        "--by", "Test clinical owner", "--reason", "changed our mind",
    )  # fmt: skip
    assert mid.returncode == 1 and "mid-rollout (silent): roll it back first" in mid.stderr


def test_canary_is_refused_without_signoffs_then_entered(rollout_env, walked) -> None:
    env = rollout_env
    state_before = _state_file().read_text()
    refused = _rollout(
        env, "advance", "--as-of", _at(21), "--observations", str(walked["observed"])
    )
    assert refused.returncode == 1
    assert "missing: clinical, technical, privacy, compliance" in refused.stderr
    assert _state_file().read_text() == state_before
    assert _audit(env)[-1]["decision"] == "refused"
    assert not (env["root"] / "gitops" / MODEL / "serving").exists()

    from hospital_mlops.governance import registration

    for role in REVIEW_ROLES:
        registration.sign_off(MODEL, env["candidate"], role, f"Test {role} reviewer")
    canary = _json(
        _rollout(env, "advance", "--as-of", _at(21), "--observations", str(walked["observed"]),
                 "--json")
    )  # fmt: skip
    assert (canary["stage_before"], canary["stage_after"]) == ("silent", "canary 10%")
    gates = {g["name"]: g for g in canary["gates"]}
    assert gates["ece"]["passed"] and gates["ece"]["observed"] < 0.05
    assert gates["registry_signoffs"]["passed"]
    serving = _isvc(Path(canary["patch_path"]).parent, "readmission")
    assert serving["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert f"{MODEL}@{env['candidate']}" in serving["spec"]["predictor"]["containers"][0]["args"]
    images = {
        c["image"]
        for d in _build(Path(canary["patch_path"]).parent)
        for spec in _pod_specs(d)
        for c in spec["containers"]
    }
    assert images == {RELEASED_IMAGE}  # every container of the canary runs the reviewed build
    assert not (env["root"] / "gitops" / MODEL / "shadow").exists()
    assert canary["traffic_percent_after"] == 10


def test_calibration_decay_in_canary_rolls_back_to_the_champion(rollout_env, walked) -> None:
    env, replay = rollout_env, rollout_env["replay"]
    batch, times, ids = replay.encounters(700, 21.05, 24.5)
    rows = replay.score(env["candidate"], "main", batch, times, ids)  # canary answers are real
    decayed = replay.outcomes(rows, 0.9, 2.5, env["root"] / "outcomes-decayed.csv")
    assert hmlops_here("monitor", "ingest-outcomes", "--input", str(decayed)).returncode == 0
    back = _json(
        _rollout(env, "advance", "--as-of", _at(25), "--observations", str(walked["observed"]),
                 "--json")
    )  # fmt: skip
    assert (back["decision"], back["stage_before"], back["stage_after"]) == (
        "rollback",
        "canary 10%",
        "rolled back",
    )
    tripped = {c["name"]: c for c in back["rollback_criteria"] if not c["passed"]}
    assert list(tripped) == ["critical_alerts"] and tripped["critical_alerts"]["observed"] == [
        "calibration"
    ]
    assert back["traffic_percent_after"] == 0
    serving = _isvc(Path(back["patch_path"]).parent, "readmission")
    args = serving["spec"]["predictor"]["containers"][0]["args"]
    assert (
        f"{MODEL}@{env['champion']}" in args
        and "canaryTrafficPercent" not in serving["spec"]["predictor"]
    )
    entry = _audit(env)[-1]
    assert entry["decided_by"] == "policy" and entry["actor"] == "test-operator"
    assert entry["result_state"]["phase"] == "rolled_back"
    status = _json(hmlops_here("rollout", "status", "--model", MODEL, "--json"))
    assert status["stage"] == "rolled_back" and status["last_decision"]["decision"] == "rollback"


def test_the_audit_log_holds_every_decision_with_its_inputs(rollout_env, walked) -> None:
    entries = [e for e in _audit(rollout_env) if e["model"] == MODEL]
    assert [e["decision"] for e in entries][:4] == ["advance", "advance", "refused", "advance"]
    for e in entries:
        assert {"actor", "decided_by", "as_of", "policy", "gates", "observations", "action"} <= set(
            e
        )
    proc = hmlops("rollout", "audit", "--model", MODEL)
    assert proc.returncode == 0 and "hash chain intact" in proc.stdout


def test_bad_requests_change_nothing(rollout_env, walked) -> None:
    env = rollout_env
    unknown = hmlops(
        "rollout", "advance", "--model", MODEL, "--version", "99", "--image", RELEASED_IMAGE
    )
    assert unknown.returncode == 2 and "no registered version 99" in unknown.stderr
    future = _rollout(env, "plan", "--as-of", "2099-01-01T00:00:00Z")
    assert future.returncode == 2 and "in the future" in future.stderr
    naive = _rollout(env, "plan", "--as-of", "2026-01-05T00:00:00")
    assert naive.returncode == 2 and "UTC offset" in naive.stderr
    audit_before, state_before = len(_audit(env)), _state_file().read_text()
    tagged = _rollout(env, "advance", "--image", "registry.hospital.example/serving:1.4")
    assert tagged.returncode == 2 and "pinned by digest" in tagged.stderr
    dry_run_applied = _rollout(
        env, "advance", "--image", "registry.hospital.example/serving:1.4",
        "--allow-unpinned-image", "--apply",
    )  # fmt: skip
    assert dry_run_applied.returncode == 2 and "pinned by digest" in dry_run_applied.stderr
    assert len(_audit(env)) == audit_before and _state_file().read_text() == state_before


def test_a_hand_edited_state_file_is_refused(rollout_env, walked) -> None:
    env = rollout_env
    path = _state_file()
    original = path.read_text()
    try:
        raw = json.loads(original)
        path.write_text(json.dumps({**raw, "stage": "canary", "canary_step": 7}))
        impossible = _rollout(env, "plan")
        assert impossible.returncode == 2 and "impossible" in impossible.stderr
        # possible on its own, but not what the audit log says happened
        raw["history"][-1] = {**raw["history"][-1], "stage": "canary", "canary_percent": 50}
        path.write_text(json.dumps({**raw, "stage": "canary", "canary_step": 1}))
        unrecorded = _rollout(env, "advance")
        assert unrecorded.returncode == 2 and "edited" in unrecorded.stderr
        assert json.loads(path.read_text())["canary_step"] == 1  # nothing acted on it
    finally:
        path.write_text(original)


def test_a_tampered_audit_log_is_detected(rollout_env, walked) -> None:
    from hospital_mlops.rollout.commands import rollout_dir

    path = rollout_dir() / "audit.jsonl"
    original = path.read_text()
    try:
        path.write_text(original.replace('"decision": "refused"', '"decision": "advance"'))
        proc = hmlops("rollout", "audit")
        assert proc.returncode == 2 and "edited after it was written" in proc.stderr
        blocked = _rollout(rollout_env, "plan")
        assert blocked.returncode == 2 and "audit log" in blocked.stderr
    finally:
        path.write_text(original)


LENIENT_POLICY = """
stages:
  shadow:
    min_hours: 1
    min_predictions: 10
    gates: {agreement_with_champion_min: 0.9, latency_p99_ms_max: 50, error_rate_max: 0.001}
  silent:
    min_hours: 1
    min_predictions: 10
    gates: {latency_p99_ms_max: 50, error_rate_max: 0.001}
  canary:
    steps: [25]
    min_hours: 1
    min_predictions: 10
    gates: {latency_p99_ms_max: 50, error_rate_max: 0.001}
rollback: {error_rate_max: 0.01, latency_p99_ms_max: 200, on_alerts: [performance, calibration]}
"""


def _failing_kubectl(where: Path) -> Path:
    """A kubectl that renders (the real one) and fails every call to the cluster; and a
    kubeconfig for it."""
    real = shutil.which("kubectl")
    assert real, "kubectl is needed to render overlays"
    bin_dir = where / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "kubectl"
    fake.write_text(
        f"#!{sys.executable}\nimport subprocess, sys\n"
        "if sys.argv[1] == 'kustomize':\n"
        f"    sys.exit(subprocess.run([{real!r}, *sys.argv[1:]]).returncode)\n"
        "sys.exit('error: the server is unavailable')\n"
    )
    fake.chmod(0o755)
    (where / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return bin_dir


def test_a_rolled_back_version_may_start_again_and_reach_full(
    rollout_env, walked, tmp_path
) -> None:
    """Under a short policy: shadow → silent → canary 25% → full, which moves the registry's
    champion alias and renders production for the candidate."""
    from hospital_mlops.governance import registry

    env, replay = rollout_env, rollout_env["replay"]
    policy = env["root"] / "lenient.yaml"
    policy.write_text(LENIENT_POLICY)
    lenient = ("--policy", str(policy), "--observations", str(walked["observed"]), "--json")
    start = _json(_rollout(env, "advance", "--as-of", _at(30), *lenient))
    assert (start["stage_before"], start["stage_after"]) == ("none", "shadow")
    batch, times, ids = replay.encounters(20, 30.05, 30.2)
    replay.score(env["champion"], "main", batch, times, ids)
    replay.score(env["candidate"], "shadow", batch, times, ids)
    silent = _json(_rollout(env, "advance", "--as-of", _at(30.5), *lenient))
    assert silent["stage_after"] == "silent", silent["gates"]
    batch, times, ids = replay.encounters(20, 30.55, 30.7)
    replay.score(env["candidate"], "shadow", batch, times, ids)
    canary = _json(_rollout(env, "advance", "--as-of", _at(31), *lenient))
    assert canary["stage_after"] == "canary 25%", canary["gates"]
    batch, times, ids = replay.encounters(20, 31.05, 31.2)
    replay.score(env["candidate"], "main", batch, times, ids)
    # The cluster refuses the production overlay: the registry must not name a champion the
    # cluster does not serve, and nothing is recorded.
    state_before, audit_before = _state_file().read_text(), len(_audit(env))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{_failing_kubectl(tmp_path)}{os.pathsep}{os.environ['PATH']}")
        patch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
        refused = _rollout(env, "advance", "--as-of", _at(31.5), *lenient, "--apply")
    assert refused.returncode == 2 and "the server is unavailable" in refused.stderr
    champion = registry.client().get_model_version_by_alias(MODEL, "champion")
    assert int(champion.version) == env["champion"]
    assert _state_file().read_text() == state_before and len(_audit(env)) == audit_before
    full = _json(_rollout(env, "advance", "--as-of", _at(31.5), *lenient))
    assert (full["stage_after"], full["traffic_percent_after"]) == ("full", 100), full["gates"]
    champion = registry.client().get_model_version_by_alias(MODEL, "champion")
    assert int(champion.version) == env["candidate"]
    production = _isvc(Path(full["patch_path"]).parent, "readmission")
    assert "canaryTrafficPercent" not in production["spec"]["predictor"]
    args = production["spec"]["predictor"]["containers"][0]["args"]
    assert f"{MODEL}@{env['candidate']}" in args
    again = _rollout(env, "plan", "--policy", str(policy))
    assert again.returncode == 2 and "already the champion" in again.stderr
    history = json.loads(_state_file().read_text())["history"]
    assert [h["stage"] for h in history] == ["shadow", "silent", "canary", "full"]


def test_retiring_keeps_the_evidence_and_the_version_is_never_served_again(rollout_env) -> None:
    """After the full rollout, the old champion is retired: aliases gone, the action recorded,
    loading and promoting it refused, its evidence still in the registry."""
    import mlflow

    from hospital_mlops.governance import registry

    env = rollout_env
    old, new = str(env["champion"]), str(env["candidate"])
    retire = ("registry", "retire", "--model", MODEL, "--by", "Test clinical owner")
    champion = hmlops_here(*retire, "--version", new, "--reason", "superseded")
    assert champion.returncode == 1 and "is the champion: promote its successor" in champion.stderr
    c = registry.client()
    c.set_registered_model_alias(MODEL, "previous", old)
    try:
        done = hmlops(*retire, "--version", old, "--reason", "superseded by the rerun", "--json")
        assert done.returncode == 0, done.stderr[-2000:]
        record = json.loads(done.stdout)
        assert record["aliases_removed"] == ["previous"] and record["by"] == "Test clinical owner"
        assert "previous" not in (c.get_registered_model(MODEL).aliases or {})
        entry = _audit(env)[-1]
        assert (entry["command"], entry["version"], entry["note"]) == (
            "retire",
            int(old),
            "superseded by the rerun",
        )
        with pytest.raises(registry.ModelRetired, match="superseded by the rerun"):
            registry.load_risk_model(MODEL, old)
        refused = hmlops_here("registry", "promote", "--model", MODEL, "--version", old)
        assert refused.returncode == 1 and "is retired" in refused.stderr
        again = hmlops_here(*retire, "--version", old, "--reason", "twice")
        assert again.returncode == 1 and "already retired" in again.stderr
        # nothing deleted: the run's evidence and the version itself are still there
        run_id = c.get_model_version(MODEL, old).run_id
        evaluation = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="evidence/evaluation.json"
        )
        assert json.loads(Path(evaluation).read_text())["discrimination"]["auroc"]["value"] > 0.6
    finally:
        # the session's other modules promote this version again
        c.delete_model_version_tag(MODEL, old, registry.RETIRED_TAG)
