"""Retraining triggers, the monitoring pipeline's IR and its recurring-run description."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.monitoring.triggers import retraining_decision
from pipelines.monitoring_runner import (
    RecurringRunError,
    compile_monitoring,
    load_recurring_run,
    recurring_run_path,
)

POLICY = load_monitoring_policy()
NOW = datetime(2026, 6, 1, tzinfo=UTC)
YOUNG = NOW - timedelta(days=30)


def _window(n: int = 500, drift: bool | None = False) -> dict:
    return {"n": n, "data_drift": drift}


def _run(windows: list[dict], alerts: list[dict] | None = None) -> dict:
    return {"windows": windows, "alerts": alerts or []}


def _decide(run: dict, **kw) -> object:
    kw.setdefault("champion_registered_at", YOUNG)
    return retraining_decision(
        run, POLICY.retraining, min_predictions=POLICY.windows.min_predictions, now=NOW, **kw
    )


def test_a_clean_stream_triggers_nothing() -> None:
    decision = _decide(_run([_window() for _ in range(6)]))
    assert not decision.retrain and decision.triggers == []


def test_critical_decay_triggers_but_a_warning_does_not() -> None:
    alerts = [
        {"kind": "calibration", "severity": "critical", "message": "ECE 0.09 > 0.05"},
        {"kind": "performance", "severity": "warning", "message": "estimated AUROC fell"},
        {"kind": "workflow", "severity": "warning", "message": "overrides"},
    ]
    decision = _decide(_run([_window()], alerts))
    assert decision.retrain
    assert [(t.kind, t.detail) for t in decision.triggers] == [("calibration", "ECE 0.09 > 0.05")]


def test_only_persistent_input_drift_triggers() -> None:
    once = _run([_window(), _window(drift=True)])
    assert not _decide(once).retrain
    # a small window in between neither breaks nor extends the streak
    twice = _run([_window(), _window(drift=True), _window(n=20, drift=False), _window(drift=True)])
    decision = _decide(twice)
    assert decision.retrain and decision.triggers[0].kind == "data_drift"
    broken = _run([_window(drift=True), _window(drift=False), _window(drift=True)])
    assert not _decide(broken).retrain


def test_schedule_and_protocol_change_trigger() -> None:
    old = _decide(_run([_window()]), champion_registered_at=NOW - timedelta(days=200))
    assert (
        old.retrain and old.triggers[0].kind == "schedule" and "200 days" in old.triggers[0].detail
    )
    declared = _decide(_run([_window()]), protocol_change="  new discharge pathway, ward 7  ")
    assert declared.retrain
    assert declared.triggers[0].detail == "new discharge pathway, ward 7"


def test_a_waiting_challenger_suppresses_retraining_and_says_why() -> None:
    decision = _decide(_run([_window()]), protocol_change="coding change", pending_challenger=4)
    assert not decision.retrain and decision.triggers[0].kind == "protocol_change"
    assert "version 4" in decision.suppressed_because


def test_the_monitoring_pipeline_compiles_strictly_with_its_cluster_wiring(tmp_path) -> None:
    from pipelines.runner import validate_ir

    path = compile_monitoring(tmp_path / "monitoring.yaml")
    ir = validate_ir(path)
    dag = ir["pipeline"].root.dag.tasks
    assert set(dag) == {"monitor-op", "decide-op", "condition-1"}
    retrain_branch = ir["pipeline"].components["comp-condition-1"].dag.tasks
    assert "retrain-op" in retrain_branch and "condition-2" in retrain_branch
    platform = yaml.safe_load_all(path.read_text())
    executors = list(platform)[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name, config in executors.items():
        secrets = {s["secretName"] for s in config["secretAsEnv"]}
        assert secrets == {"hmlops-registry", "hmlops-prediction-log", "hmlops-drift-db"}, name
    assert "pvcMount" in executors["exec-retrain-op"]
    assert "pvcMount" not in executors["exec-monitor-op"]  # monitoring needs no feature store


def test_the_committed_monitoring_ir_is_current(tmp_path) -> None:
    committed = Path(__file__).resolve().parents[2] / "pipelines/compiled/monitoring_pipeline.yaml"
    fresh = compile_monitoring(tmp_path / "fresh.yaml")
    assert committed.read_text() == fresh.read_text(), "run `make compile` and commit it"


def test_the_recurring_run_is_described_and_validated(tmp_path) -> None:
    spec = load_recurring_run()
    assert spec.cron.split()[0] == "0" and spec.max_concurrency == 1 and spec.no_catchup
    root = Path(__file__).resolve().parents[2]
    assert (root / spec.pipeline_package).is_file()
    raw = yaml.safe_load(recurring_run_path().read_text())
    for change, message in [
        ({"cron": "30 5 * * *"}, "six fields"),
        ({"parameters": {"modle": "x"}}, "unknown pipeline parameters ['modle']"),
        ({"parameters": {"run_id": "x"}}, "run_id is set per run"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"surprise": 1}, "surprise"),
        # the parameters are the named pipeline's: the batch pipeline takes no source
        ({"pipeline_package": "pipelines/compiled/batch_pipeline.yaml"}, "parameters ['source']"),
        ({"pipeline_package": "pipelines/compiled/other.yaml"}, "not a pipeline this project"),
    ]:
        path = tmp_path / "run.yaml"
        path.write_text(yaml.safe_dump({**raw, **change}))
        with pytest.raises(RecurringRunError, match=re.escape(message)):
            load_recurring_run(path)
