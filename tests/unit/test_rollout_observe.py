"""A stage's observations from the predictors' Prometheus series and the prediction logs, and the
GitOps change a decision writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from prometheus_client import REGISTRY, generate_latest

from hospital_mlops.deploy.overlay import DEFAULT_IMAGE, DeployRenderError
from hospital_mlops.monitoring.alerts import Alert
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.monitoring.windows import Baseline
from hospital_mlops.rollout import gitops
from hospital_mlops.rollout.observe import (
    ObservationError,
    ServiceSnapshot,
    agreement,
    observations,
    parse_service_metrics,
    read_observations_file,
)
from serving.metrics import RequestMetrics

RELEASED_IMAGE = "registry.hospital.example/hospital-mlops/serving@sha256:" + "5e" * 32

ROOT = Path(__file__).resolve().parents[2]


def _scrape(model: str, version: int) -> ServiceSnapshot:
    return parse_service_metrics([generate_latest(REGISTRY).decode()], model, version)


def test_the_served_series_give_p99_and_error_rate_as_prometheus_would() -> None:
    metrics = RequestMetrics("unit-model", 7)
    before = _scrape("unit-model", 7)
    for _ in range(98):
        metrics.answered(0.002)
    for _ in range(2):
        metrics.answered(0.04)
    metrics.invalid()  # the caller's bad input: not the model's error
    metrics.failed()
    after = _scrape("unit-model", 7).since(before)
    assert after.counts == {"ok": 100, "invalid": 1, "error": 1}
    assert after.error_rate == pytest.approx(1 / 101)
    # rank 99 of 100 falls in (0.025, 0.05] between cumulative counts 98 and 100: halfway
    assert after.latency_quantile_ms(0.99) == pytest.approx(37.5)
    assert after.latency_quantile_ms(0.5) == pytest.approx(1000 * (0.001 + 0.001 * 50 / 98))
    # another version's series are not mixed in
    assert _scrape("unit-model", 8).answered == 0


def test_pods_add_up_and_a_restarted_pod_starts_over() -> None:
    text = generate_latest(REGISTRY).decode()
    metrics = RequestMetrics("unit-pods", 1)
    metrics.answered(0.004)
    text = generate_latest(REGISTRY).decode()
    two_pods = parse_service_metrics([text, text], "unit-pods", 1)
    assert two_pods.counts["ok"] == 2
    earlier = ServiceSnapshot({"ok": 50.0, "invalid": 0.0, "error": 3.0}, {"+Inf": 50.0})
    assert two_pods.since(earlier).counts["ok"] == 2  # counters went down: a reset
    assert ServiceSnapshot.from_dict(two_pods.as_dict()) == two_pods


def test_latency_beyond_the_last_bucket_reports_the_last_bound() -> None:
    snap = ServiceSnapshot({"ok": 10}, {"0.1": 0.0, "2.5": 5.0, "+Inf": 10.0})
    assert snap.latency_quantile_ms(0.99) == 2500.0
    assert ServiceSnapshot({"ok": 0}, {}).latency_quantile_ms(0.99) is None


def test_text_that_is_not_prometheus_is_an_error_naming_it() -> None:
    with pytest.raises(ObservationError, match="Prometheus"):
        parse_service_metrics(["<html>login</html>\n"], "m", 1)


def test_agreement_pairs_the_same_request_and_encounter_only() -> None:
    candidate = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d", "d"],
            "encounter_token": ["t1", "t2", None, "t4", "t4"],  # "d" twice: not pairable
            "alert": [True, False, True, True, False],
        }
    )
    champion = pd.DataFrame(
        {
            "request_id": ["a", "b", "c", "d", "zz"],
            "encounter_token": ["t1", "t2", None, "t4", "t9"],
            "alert": [True, True, True, True, False],
        }
    )
    share, pairs = agreement(candidate, champion)
    assert pairs == 3 and share == pytest.approx(2 / 3)
    assert agreement(candidate.iloc[:0], champion) == (None, 0)


def test_the_observations_file_is_validated(tmp_path: Path) -> None:
    good = tmp_path / "obs.json"
    good.write_text(json.dumps({"latency_p99_ms": 12.5, "error_rate": 0.0}))
    assert read_observations_file(good) == {"latency_p99_ms": 12.5, "error_rate": 0.0}
    for bad in ({"error_rate": 2}, {"latency": 1}, {"error_rate": "low"}, [], {}):
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(bad))
        with pytest.raises(ObservationError, match=r"bad\.json"):
            read_observations_file(path)


def test_stage_numbers_pool_the_stage_and_leave_unmeasured_ones_empty() -> None:
    policy = load_monitoring_policy()
    rng = np.random.default_rng(1)
    risk = rng.uniform(0.02, 0.5, 600)
    frame = pd.DataFrame(
        {
            "risk": risk,
            "alert": risk > 0.3,
            "outcome": np.where(np.arange(600) < 400, (rng.random(600) < risk) * 1.0, np.nan),
        }
    )
    baseline = Baseline("m/1", 0.68, 0.01, 1.0, 20.0, 0.11, risk)
    alert = Alert("calibration", "ml", "critical", "…", "2026-01-01T00:00:00Z")
    obs = observations(
        hours=30.0,
        frame=frame,
        baseline=baseline,
        policy=policy,
        alerts=[alert, alert],
        service=None,
        service_override={"latency_p99_ms": 9.0},
    )
    assert obs.predictions == 600 and obs.hours == 30.0
    assert obs.alerts_per_100_change == pytest.approx(100 * (risk > 0.3).mean() / 20 - 1, abs=1e-6)
    assert obs.ece is not None and obs.ece < 0.1  # outcomes drawn from the risks themselves
    assert obs.latency_p99_ms == 9.0 and obs.error_rate is None  # never guessed
    assert obs.agreement_with_champion is None and obs.override_rate is None
    assert obs.alerts == (("calibration", "critical"),)
    too_few = observations(
        hours=1.0,
        frame=frame.assign(outcome=np.nan),
        baseline=baseline,
        policy=policy,
        alerts=[],
        service=None,
    )
    assert too_few.ece is None and too_few.latency_p99_ms is None


@pytest.mark.parametrize(
    ("phase", "previous", "renders", "removals"),
    [
        ("shadow", None, {"shadow": ("shadow", 2, None)}, []),
        ("silent", "shadow", {}, []),
        ("canary", "silent", {"serving": ("canary", 2, 10)}, ["shadow"]),
        ("full", "canary", {"serving": ("production", 2, None)}, ["shadow"]),
        ("rolled_back", "canary", {"serving": ("production", 1, None)}, ["shadow"]),
        ("rolled_back", "silent", {}, ["shadow"]),  # the champion's overlay never changed
    ],
)
def test_each_decision_changes_the_right_overlays(phase, previous, renders, removals) -> None:
    change = gitops.change_for(
        gitops.Target(phase, 2, 1, 10 if phase == "canary" else None), previous
    )
    assert change.renders == renders and change.removals == removals


def _build(directory: Path) -> list[dict]:
    built = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    )
    return list(yaml.safe_load_all(built.stdout))


def test_the_canary_overlay_carries_the_step_and_the_pinned_version(tmp_path: Path) -> None:
    shadow = gitops.write_change(
        tmp_path,
        "readmission-30d",
        gitops.change_for(gitops.Target("shadow", 2, 1), None),
        apply=False,
    )
    assert shadow.patch_path == str(tmp_path / "readmission-30d/shadow/kustomization.yaml")
    canary = gitops.write_change(
        tmp_path,
        "readmission-30d",
        gitops.change_for(gitops.Target("canary", 2, 1, 50), "silent"),
        apply=False,
        image=RELEASED_IMAGE,
    )
    assert canary.removed == (str(tmp_path / "readmission-30d/shadow"),)
    assert sorted(p.name for p in (tmp_path / "readmission-30d").iterdir()) == ["serving"]
    [isvc] = [
        d for d in _build(tmp_path / "readmission-30d/serving") if d["kind"] == "InferenceService"
    ]
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert isvc["spec"]["explainer"]["canaryTrafficPercent"] == 50
    assert "readmission-30d@2" in isvc["spec"]["predictor"]["containers"][0]["args"]


def test_apply_without_a_kubeconfig_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    with pytest.raises(gitops.ApplyError, match="KUBECONFIG"):
        gitops.write_change(
            tmp_path, "m", gitops.change_for(gitops.Target("shadow", 2, 1), None), apply=True
        )
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "nope"))
    with pytest.raises(gitops.ApplyError, match="missing files"):
        gitops.require_kubeconfig()


def test_apply_touches_only_the_inference_services(tmp_path: Path, monkeypatch) -> None:
    """`--apply` sends the cluster the overlays' InferenceServices and nothing else: what the
    controller's Role allows (kustomize/rbac/rollout-controller)."""
    import shutil
    import stat

    real = shutil.which("kubectl")
    assert real, "kubectl is needed to render overlays"
    calls = tmp_path / "calls.jsonl"
    fake_dir = tmp_path / "bin"
    fake_dir.mkdir()
    fake = fake_dir / "kubectl"
    fake.write_text(
        f"""#!{sys.executable}
import json, subprocess, sys
if sys.argv[1] == "kustomize":
    sys.exit(subprocess.run([{real!r}, *sys.argv[1:]]).returncode)
with open({str(calls)!r}, "a") as out:
    out.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
"""
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\n")
    monkeypatch.setenv("PATH", f"{fake_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))

    canary = gitops.change_for(gitops.Target("canary", 2, 1, 10), "silent")
    # what reaches a cluster is pinned by digest, even where a dry run would accept a tag
    with pytest.raises(DeployRenderError, match="pinned by digest"):
        gitops.write_change(tmp_path / "gitops", "readmission-30d", canary, apply=True,
                            image=DEFAULT_IMAGE, allow_unpinned_image=True)  # fmt: skip
    assert not calls.exists()
    gitops.write_change(tmp_path / "gitops", "readmission-30d", gitops.change_for(
        gitops.Target("shadow", 2, 1), None), apply=True)  # fmt: skip
    gitops.write_change(
        tmp_path / "gitops", "readmission-30d", canary, apply=True, image=RELEASED_IMAGE
    )
    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    applied = [yaml.safe_load_all(c["stdin"]) for c in recorded if c["argv"][0] == "apply"]
    kinds = [{(d["kind"], d["metadata"]["name"]) for d in docs if d} for docs in applied]
    assert kinds == [{("InferenceService", "readmission-shadow")},
                     {("InferenceService", "readmission")}]  # fmt: skip
    deletes = [c["argv"] for c in recorded if c["argv"][0] == "delete"]
    assert deletes == [["delete", "inferenceservice", "readmission-shadow", "-n",
                        "hospital-mlops", "--ignore-not-found=true"]]  # fmt: skip
    # exactly the names the Role lets it patch and delete
    role = next(d for d in _build(ROOT / "kustomize/rbac/rollout-controller")
                if d["kind"] == "Role")  # fmt: skip
    patchable = {n for r in role["rules"] if "patch" in r["verbs"] for n in r["resourceNames"]}
    deletable = {n for r in role["rules"] if "delete" in r["verbs"] for n in r["resourceNames"]}
    assert {n for k in kinds for _, n in k} <= patchable and {d[2] for d in deletes} <= deletable
