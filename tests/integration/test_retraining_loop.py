"""The retraining loop end to end through kfp.local: a fault in the outcomes trips a trigger in
the monitoring run itself; the monitoring pipeline retrains on the newest published snapshot,
compares the challenger with the champion on the recent window, and records the decision.

Everything runs in a registry, store, prediction log and drift store of this test's own: the
session's shared diabetes130 registry holds the rerun's version, newer than its champion and
never rolled out, which rightly holds retraining (test_monitoring_cli asserts exactly that), and
a version registered here must not become a waiting challenger for the other modules.

The bundled extract has no newer period, so the champion learns from the whole extract and the
newer extract is the same source after its oldest 5% of encounters aged out of the extract's
window: a different snapshot that passes every gate of its own (a version is registered).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.catalog import Catalog
from tests.integration.conftest import REVIEW_ROLES, hmlops_here
from tests.stores import StoreFactory

MODEL = "readmission-30d"
SOURCE = "diabetes130"
USE = "readmission_risk_model"
AGED_OUT = 0.05  # the oldest share of encounters missing from the newer extract
PER_WEEK = 500
RATE_FACTOR = 2.0  # the fault: twice the readmissions the champion's risks predict


def _publish(store: Path, extract: Path, run_id: str, work: Path) -> dict:
    """The data pipeline's layers in process, publishing into ``store``; its index entry."""
    from hospital_mlops.data.published_index import read_entries
    from hospital_mlops.steps import data as data_steps

    ctx = data_steps.RunContext(SOURCE, USE, store, run_id)
    summary = data_steps.run_in_process(ctx, extract, work / run_id)
    assert summary["status"] == "succeeded", summary.get("error")
    return next(e for e in read_entries(store) if e["run_id"] == run_id)


def _champion(store: Path, snapshot: dict, work: Path) -> int:
    """The model steps on ``snapshot``, registered, signed off and promoted to @champion."""
    from hospital_mlops.governance import registration
    from hospital_mlops.steps.data import RunContext
    from hospital_mlops.steps.model import run_model_in_process

    ctx = RunContext(SOURCE, USE, store, "champion-training")
    version = int(run_model_in_process(ctx, Path(snapshot["path"]), work / "champion")["version"])
    for role in REVIEW_ROLES:
        registration.sign_off(MODEL, version, role, f"Test {role} reviewer")
    registration.promote(MODEL, version, "champion", REVIEW_ROLES)
    return version


def _log_recent_predictions(url: str, weeks: list[pd.Timestamp]) -> list[dict]:
    """The champion's answers to real test-period encounters, scored in the last whole weeks."""
    from hospital_mlops.features import feature_set_for, served_inputs
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
    from hospital_mlops.inference.registered_examples import registered_examples
    from hospital_mlops.model.scoring import score

    loaded = registry.load_risk_model(MODEL, "champion")
    fs = feature_set_for(SOURCE)
    threshold = float(loaded.training["thresholds"]["discharge_planning"])
    instances = registered_examples(MODEL, "champion", n=PER_WEEK * len(weeks), seed=5)
    for i, instance in enumerate(instances):
        instance["encounter_token"] = f"loop{i:019d}"
    served = ServedModel(
        MODEL,
        loaded.version,
        loaded.sha256,
        fs.version,
        loaded.tags["lineage.features_sha256"],
        SOURCE,
    )
    rng = np.random.default_rng(1)
    rows: list[dict] = []
    for start in range(0, len(instances), 100):
        batch = instances[start : start + 100]
        answers = score(
            batch, served_inputs(fs), loaded.model, threshold, f"{MODEL}/{loaded.version}"
        )
        for j, answer in enumerate(answers):
            week = weeks[(start + j) // PER_WEEK]
            when = week + pd.Timedelta(seconds=int(rng.integers(0, 7 * 86400)))
            answer["scored_at"] = when.isoformat().replace("+00:00", "Z")
        rows.extend(records("loop", "v1", served, batch, answers))
    log = PredictionLog(url)
    log.write(rows)
    log.close()
    return rows


def test_a_calibration_fault_retrains_and_the_challenger_is_compared_and_recorded(
    new_store_url: StoreFactory,
    d130_full: Path,
    catalog: Catalog,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hospital_mlops.data.sources.extract import read_extract, write_csv_extract
    from hospital_mlops.governance import registry
    from hospital_mlops.monitoring.policy import load_monitoring_policy
    from hospital_mlops.monitoring.window_grid import window_starts
    from hospital_mlops.steps import monitoring as monitoring_steps
    from pipelines.monitoring_runner import run_monitoring_locally

    started = time.monotonic()
    monkeypatch.setenv("HMLOPS_STATE_DIR", str(tmp_path / "state"))  # an empty registry
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    url = new_store_url("log")
    monkeypatch.setenv("HMLOPS_PREDICTION_LOG_URL", url)
    monkeypatch.setenv("HMLOPS_DRIFT_DB_URL", new_store_url("drift"))
    store = tmp_path / "store"

    # The champion: the whole extract through the data pipeline, then the model steps
    first = _publish(store, d130_full, "extract-then", tmp_path / "work")
    champion = _champion(store, first, tmp_path / "work")
    # A newer extract published since: the oldest encounters have aged out of it
    spec = catalog.source(SOURCE)
    encounters = read_extract(d130_full, spec)["encounters"]
    ids = pd.to_numeric(encounters["encounter_id"])
    newer = {"encounters": encounters[ids > ids.quantile(AGED_OUT)]}
    newer_extract = write_csv_extract(newer, spec, tmp_path / "newer-extract")
    latest = _publish(store, newer_extract, "extract-now", tmp_path / "work")
    assert latest["sha256"] != first["sha256"]

    # Three whole weeks of the champion's predictions, up to the start of the current week
    policy = load_monitoring_policy()
    length = timedelta(hours=policy.windows.length_hours)
    this_week = window_starts(pd.Series([pd.Timestamp(datetime.now(UTC))]), length).iloc[0]
    weeks = [this_week - (3 - k) * pd.Timedelta(length) for k in range(3)]
    rows = _log_recent_predictions(url, weeks)

    # The fault: from the second week on, twice as many readmissions as the risks predict
    risk = np.array([r["risk"] for r in rows])
    faulted = np.array([pd.Timestamp(r["scored_at"]) >= weeks[1] for r in rows])
    rate = np.where(faulted, np.minimum(1.0, RATE_FACTOR * risk), risk)
    outcome = (np.random.default_rng(2).random(len(rows)) < rate).astype(int)
    outcomes = tmp_path / "outcomes.csv"
    pd.DataFrame(
        {"encounter_token": [r["encounter_token"] for r in rows], "readmitted_30d": outcome}
    ).to_csv(outcomes, index=False)
    joined = hmlops_here("monitor", "ingest-outcomes", "--input", str(outcomes), "--json")
    assert joined.returncode == 0, joined.stderr[-2000:]
    prepared = time.monotonic()

    found = run_monitoring_locally(out=tmp_path / "pipeline", store_root=store)
    ran = time.monotonic()

    # monitor: the fault is seen, as critical calibration alerts in the faulted weeks
    run = found["monitoring"]
    assert run["model"] == f"{MODEL}/{champion}"
    assert (run["predictions"], run["with_outcomes"]) == (len(rows), len(rows))
    faulted_starts = {w.isoformat().replace("+00:00", "Z") for w in weeks[1:]}
    calibration = [a for a in run["alerts"] if a["kind"] == "calibration"]
    assert {a["window_start"] for a in calibration} >= faulted_starts
    assert all(a["severity"] == "critical" and a["owner"] == "ml" for a in calibration)
    for w in run["windows"]:
        if w["start"] in faulted_starts:
            assert w["observed_to_expected"] > policy.thresholds.observed_to_expected[1]

    # decide: retrain, because of that alert and nothing else (no schedule, no declaration)
    decision = found["decision"]
    assert decision["champion"] == champion
    assert decision["retrain"] is True and decision["suppressed_because"] is None
    assert [t["kind"] for t in decision["triggers"]] == ["calibration"]
    first_alert = next(a for a in run["alerts"] if a["kind"] == "calibration")
    assert decision["triggers"][0]["detail"] == first_alert["message"]

    # retrain → compare: the challenger this run registered, on the recent window's outcomes
    assert "comparison" in found, "the retrain branch did not run"
    comparison = found["comparison"]
    challenger = comparison["challenger"]
    assert comparison["model"] == MODEL and comparison["champion"] == champion
    assert challenger > champion
    since = datetime.fromisoformat(comparison["window"]["since"])
    until = datetime.fromisoformat(comparison["window"]["until"])
    assert until - since == timedelta(days=policy.retraining.comparison_window_days)
    assert since <= weeks[0] and weeks[-1] + length <= until
    assert comparison["rows"] == len(rows)
    difference = comparison["challenger_minus_champion"]["auroc"]
    low, high = difference["ci"]
    assert low <= difference["value"] <= high
    models = comparison["models"]
    checks = {c["name"]: c for c in comparison["checks"]}
    assert set(checks) == {"auroc_not_worse", "ece"}
    auroc_check, ece_check = checks["auroc_not_worse"], checks["ece"]
    assert auroc_check["observed"] == low
    assert auroc_check["limit"] == -policy.retraining.challenger_max_auroc_loss
    assert auroc_check["passed"] is (low >= auroc_check["limit"])
    assert ece_check["observed"] == models["challenger"]["ece"]["value"]
    assert ece_check["limit"] == policy.thresholds.ece_max
    # Retrained on data from before the shift, the challenger predicts the old readmission rate
    # as the champion does: on the shifted window it is just as miscalibrated, and may not start
    # a rollout.
    assert models["champion"]["ece"]["value"] > policy.thresholds.ece_max
    assert ece_check["passed"] is False
    assert comparison["challenger_fit_for_rollout"] is False

    # The registry: the challenger registered by this run from the newest snapshot, with its
    # gates passed, and no alias: the pipeline never promotes; the champion is unchanged
    shown = registry.show(MODEL)
    versions = {v["version"]: v for v in shown["versions"]}
    assert sorted(versions) == [champion, challenger]
    new = versions[challenger]
    assert new["tags"]["lineage.run_id"] == found["run_id"]
    assert new["tags"]["lineage.features_sha256"] == latest["sha256"]
    assert new["tags"][registry.GATES_TAG] == "true"
    assert registry.RETIRED_TAG not in new["tags"]
    assert new["aliases"] == [] and versions[champion]["aliases"] == ["champion"]
    # ...and it now waits for a person (roll it out, or retire it): the next run that sees the
    # same fault does not retrain on top of it
    again = monitoring_steps.decide(run, MODEL, "champion", "")
    assert again["retrain"] is False
    assert [t["kind"] for t in again["triggers"]] == ["calibration"]
    assert f"version {challenger} is newer" in again["suppressed_because"]
    print(
        f"\nretraining loop: setup {prepared - started:.0f} s, pipeline {ran - prepared:.0f} s, "
        f"checks {time.monotonic() - ran:.0f} s"
    )
