"""`hmlops monitor` on the real champion: its own test-period encounters scored as a three-week
replay, outcomes joined late, windows against the registered baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.integration.conftest import hmlops, hmlops_here

MODEL = "readmission-30d"
WEEK_STARTS = ["2026-01-01T00:00:00Z", "2026-01-08T00:00:00Z", "2026-01-15T00:00:00Z"]


@pytest.fixture(scope="module")
def replay(d130_champion, monkeypatch_module, module_new_store_url) -> tuple[str, pd.DataFrame]:
    """1,500 real test-period encounters scored by the champion, spread over three weeks, in a
    prediction log of their own (SQLite, then PostgreSQL); and outcomes for two thirds of them."""
    from hospital_mlops.features import feature_set_for, served_inputs
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
    from hospital_mlops.inference.registered_examples import registered_examples
    from hospital_mlops.model.scoring import score

    url = module_new_store_url("log")
    monkeypatch_module.setenv("HMLOPS_PREDICTION_LOG_URL", url)
    loaded = registry.load_risk_model(MODEL, "champion")
    fs = feature_set_for("diabetes130")
    threshold = float(loaded.training["thresholds"]["discharge_planning"])
    instances = registered_examples(MODEL, "champion", n=1500, seed=3)
    for i, instance in enumerate(instances):
        instance["encounter_token"] = f"enc{i:020d}"
    served = ServedModel(MODEL, loaded.version, loaded.sha256, fs.version, "", "diabetes130")
    rng = np.random.default_rng(0)
    log = PredictionLog(url)
    rows = []
    for start in range(0, len(instances), 100):
        batch = instances[start : start + 100]
        answers = score(
            batch, served_inputs(fs), loaded.model, threshold, f"{MODEL}/{loaded.version}"
        )
        for j, answer in enumerate(answers):
            week = (start + j) % 3
            seconds = int(rng.integers(0, 7 * 86400))
            when = pd.Timestamp(WEEK_STARTS[week]) + pd.Timedelta(seconds=seconds)
            answer["scored_at"] = when.isoformat().replace("+00:00", "Z")
        rows.extend(records("replay", "v1", served, batch, answers))
    log.write(rows)
    log.close()
    # Outcomes drawn with the calibrated risk itself: a clean stream, known ahead
    risk = np.array([r["risk"] for r in rows])
    outcome = (rng.random(len(risk)) < risk).astype(int)
    outcomes = pd.DataFrame(
        {"encounter_token": [r["encounter_token"] for r in rows], "readmitted_30d": outcome}
    ).iloc[:1000]
    return url, outcomes


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_monitor_run_before_outcomes_estimates_and_labels_it_so(replay, d130_champion) -> None:
    proc = hmlops("monitor", "run", "--model", f"{MODEL}@champion", "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(proc.stdout)
    assert run["model"] == f"{MODEL}/{d130_champion}" and run["predictions"] == 1500
    assert [w["start"] for w in run["windows"]] == WEEK_STARTS
    for w in run["windows"]:
        assert w["n"] == 500 and w["auroc"] is None and w["ece"] is None  # no outcomes yet
        assert 0.55 < w["estimated_auroc"] < 0.8
        assert set(w) >= {"end", "data_drift", "score_drift", "alerts_per_100", "override_rate"}
    # the replay is the champion's own test period: its risks are the validated ones
    assert not any(a["kind"] in ("score_drift", "performance") for a in run["alerts"])
    assert run["baseline"]["auroc"] > 0.6


def test_outcomes_join_and_the_realized_numbers_appear(replay, tmp_path) -> None:
    _, outcomes = replay
    path = tmp_path / "outcomes.csv"
    outcomes.to_csv(path, index=False)
    proc = hmlops("monitor", "ingest-outcomes", "--input", str(path), "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    done = json.loads(proc.stdout)
    assert (done["rows"], done["new"], done["predictions_joined"]) == (1000, 1000, 1000)
    out, metrics, events = tmp_path / "run.json", tmp_path / "m.prom", tmp_path / "e.jsonl"
    proc = hmlops(
        "monitor",
        "run",
        "--json",
        "--out",
        str(out),
        "--metrics-file",
        str(metrics),
        "--events-file",
        str(events),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads(out.read_text())
    assert 'hmlops_monitoring_latest_window{metric="auroc"' in metrics.read_text()
    lines = events.read_text().splitlines() if events.exists() else []
    assert [json.loads(line)["data"] for line in lines] == run["alerts"]
    assert run == json.loads(proc.stdout) and run["with_outcomes"] == 1000
    for w in run["windows"]:
        assert w["n_outcomes"] > 300 and w["auroc"] is not None and w["ece"] is not None
        assert w["auroc_ci"][0] <= w["auroc"] <= w["auroc_ci"][1]
    # break-downs by the requests' own fields, per window; small groups listed without numbers
    cells = run["breakdowns"]
    assert {c["breakdown"] for c in cells} == {"race", "sex", "age", "admission_source"}
    for w in run["windows"]:
        mine = [c for c in cells if c["window_start"] == w["start"] and c["breakdown"] == "sex"]
        shown = [c for c in mine if not c["suppressed"]]
        assert {c["group"] for c in shown} >= {"Female", "Male"}
        assert sum(c["n"] for c in shown) <= w["n"]
        assert all(c["observed_to_expected"] is not None for c in shown)
    assert all(c["n"] is None for c in cells if c["suppressed"])
    # outcomes drawn with the predicted risk: calibration holds, nothing for ML to chase
    assert not any(a["kind"] in ("calibration", "performance") for a in run["alerts"])
    # no response recorded yet and none expected (policy): no workflow numbers, no "all ignored"
    assert all(w["acknowledgement_rate"] is None and w["ignored"] == 0 for w in run["windows"])
    assert not any(a["kind"] == "workflow" for a in run["alerts"])


def test_outcomes_for_unknown_encounters_are_refused_with_nothing_written(replay, tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(
        "encounter_token,readmitted_30d\nenc00000000000000000001,1\nnosuchencounter000000,0\n"
    )
    proc = hmlops("monitor", "ingest-outcomes", "--input", str(path))
    assert proc.returncode == 2
    assert "no logged prediction" in proc.stderr and "Traceback" not in proc.stderr


def test_feedback_is_recorded_and_feeds_the_workflow_numbers(replay, tmp_path) -> None:
    import sqlalchemy as sa

    url, _ = replay
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        prediction_id, scored_at = conn.execute(
            sa.text("SELECT prediction_id, scored_at FROM predictions WHERE alert LIMIT 1")
        ).one()
    engine.dispose()
    later = (pd.Timestamp(scored_at) + pd.Timedelta(minutes=40)).isoformat()
    args = ("monitor", "record-feedback", "--prediction-id", prediction_id)
    overridden = ("--response", "overridden", "--responded-at", later)
    free_text = hmlops_here(*args, *overridden, "--reason", "x")
    assert free_text.returncode == 2 and "configured reasons" in free_text.stderr
    reason = "already planned by the care team"  # config/monitoring.yaml
    done = hmlops(*args, "--response", "overridden", "--responded-at", later, "--reason", reason)
    assert done.returncode == 0, done.stderr[-2000:]
    # the same answer again (a retried command) is not counted twice
    again = hmlops(*args, *overridden, "--reason", reason)
    assert again.returncode == 0 and again.stdout.startswith("already recorded"), again.stdout
    early = (pd.Timestamp(scored_at) - pd.Timedelta(hours=2)).isoformat()
    other = hmlops_here(
        "monitor",
        "record-feedback",
        "--prediction-id",
        "no-such-prediction",
        "--response",
        "acknowledged",
        "--responded-at",
        early,
    )
    assert other.returncode == 2 and "no prediction" in other.stderr
    run = json.loads(hmlops("monitor", "run", "--json").stdout)
    week = next(w for w in run["windows"] if w["start"] <= scored_at < w["end"])
    # one answer, every other alert long past its 24 h: the channel is live, and mostly silent
    assert week["override_rate"] == 1.0 and week["override_reasons"] == {reason: 1}
    assert week["median_minutes_to_response"] == 40.0
    assert week["ignored"] == week["alerts_issued"] - 1 and week["pending"] == 0
    workflow = [a for a in run["alerts"] if a["kind"] == "workflow"]
    assert workflow and all(a["owner"] == "clinical-operations" for a in workflow)
    page = tmp_path / "report.html"
    made = hmlops("monitor", "report", "--out", str(page))
    assert made.returncode == 0, made.stderr[-2000:]
    html = page.read_text()
    assert html.count("<svg") == 5 and "<script" not in html and reason in html


def test_the_monitoring_pipeline_runs_and_a_waiting_challenger_holds_retraining(
    replay, d130_runs, tmp_path
) -> None:
    """kfp.local: monitor → triggers. A declared protocol change fires, but the rerun's version
    is newer than the champion and not rolled out: retraining waits, and says why."""
    _, _, second, _, _ = d130_runs
    proc = hmlops(
        "monitor", "pipeline", "run", "--out", str(tmp_path), "--json",
        "--protocol-change", "new discharge pathway on the medical wards",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found["monitoring"]["predictions"] == 1500
    assert Path(found["report"]).is_file()
    decision = found["decision"]
    assert [t["kind"] for t in decision["triggers"]] == ["protocol_change"]
    assert decision["retrain"] is False
    assert f"version {second['model']['version']} is newer" in decision["suppressed_because"]
    assert "comparison" not in found  # the retrain branch did not run


def test_a_challenger_is_compared_on_the_recent_window(replay, d130_runs) -> None:
    """The rerun's version re-scores the champion's logged requests exactly as received: the
    same model bits give the same risks, so the comparison shows no difference at all."""
    _, _, second, _, _ = d130_runs
    challenger = str(second["model"]["version"])
    until = "2026-01-22T00:00:00Z"  # the replay's three weeks, outcomes ingested above
    proc = hmlops("monitor", "compare", "--challenger", challenger, "--until", until, "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["rows"] == 1000 and result["challenger"] == int(challenger)
    models = result["models"]
    assert models["challenger"]["auroc"]["value"] == models["champion"]["auroc"]["value"]
    assert result["challenger_minus_champion"]["auroc"]["ci"] == [0.0, 0.0]
    assert result["challenger_fit_for_rollout"] is True
    before = "2025-06-01T00:00:00Z"
    early = hmlops_here("monitor", "compare", "--challenger", challenger, "--until", before)
    assert early.returncode == 2 and "have outcomes; the comparison needs 100" in early.stderr
    unknown = hmlops_here("monitor", "compare", "--challenger", "99", "--until", until)
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
