"""`make demo`'s monitoring story end to end, at a faster pace (10-second windows, 600
encounters a phase): the real servers, a retrained candidate rolled out to a 50% canary, a clean
window, a feed fault, the owners alerted from the fault window only, and the rollback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.html_checks import is_self_contained
from tests.integration.conftest import free_port_base

MODEL = "readmission-30d"


@pytest.fixture(scope="module")
def story(d130_runs, d130_champion, tmp_path_factory):
    from hospital_mlops.demo_story import Pace, play_story

    store = d130_runs[0]
    out = tmp_path_factory.mktemp("story")
    pace = Pace(window_seconds=10, phase=600, shadow=400, detector_window=100)
    # the story points the logs and the drift store at its own files: restored afterwards
    # (MonkeyPatch.delenv records nothing for a variable that is not set)
    names = [
        f"HMLOPS_{n}" for n in ("PREDICTION_LOG_URL", "SHADOW_PREDICTION_LOG_URL", "DRIFT_DB_URL")
    ]
    saved = {name: os.environ.get(name) for name in names}
    try:
        outcome = play_story(MODEL, d130_champion, store, out, free_port_base(4), pace)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return outcome, d130_champion


def test_the_canary_is_rolled_back_on_the_fault_and_the_champion_stays(story) -> None:
    from hospital_mlops.governance import registry

    outcome, champion = story
    decision = outcome.decision
    assert decision["stage_before"] == "canary 50%" and decision["decision"] == "rollback"
    tripped = [c["name"] for c in decision["rollback_criteria"] if not c["passed"]]
    assert tripped == ["critical_alerts"]
    live = registry.client().get_model_version_by_alias(MODEL, "champion")
    assert int(live.version) == champion != outcome.candidate
    overlay = Path(decision["patch_path"]).read_text()
    assert f"{MODEL}@{champion}" in overlay or f"v{champion}" in overlay


def test_the_owners_are_alerted_from_the_fault_window_only(story) -> None:
    outcome, _ = story
    windows = outcome.monitoring["windows"]
    clean, fault = windows[-2], windows[-1]
    assert clean["n"] >= 200 and fault["n"] >= 200  # the champion's half of each phase
    assert fault["data_drift"] is True and "number_diagnoses" in fault["drifted_features"]
    assert clean["data_drift"] is False and clean["score_drift"] is False
    by_window: dict[str, set[tuple[str, str]]] = {}
    for alert in outcome.monitoring["alerts"]:
        by_window.setdefault(alert["window_start"], set()).add((alert["kind"], alert["owner"]))
    assert ("calibration", "ml") in by_window[fault["start"]]
    assert ("score_drift", "data-engineering") in by_window[fault["start"]]
    assert ("alert_burden", "clinical-operations") in by_window[fault["start"]]
    assert clean["start"] not in by_window
    critical = [a for a in outcome.monitoring["alerts"] if a["severity"] == "critical"]
    assert {a["window_start"] for a in critical} == {fault["start"]}


def test_every_step_is_in_the_audit_log_and_the_report_is_self_contained(story) -> None:
    from hospital_mlops.rollout.audit import read_audit
    from hospital_mlops.rollout.commands import rollout_dir

    outcome, _ = story
    mine = [
        e for e in read_audit(rollout_dir() / "audit.jsonl") if e["version"] == outcome.candidate
    ]
    assert [(e["stage_before"], e["stage_after"]) for e in mine if e["changed_state"]] == [
        ("none", "shadow"),
        ("shadow", "silent"),
        ("silent", "canary 50%"),
        ("canary 50%", "rolled back"),
    ]
    page = outcome.report.read_text()
    assert is_self_contained(page) and page.count("<svg") == 5
    assert "calibration" in page and "clinical-operations" in page
