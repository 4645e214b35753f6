"""`hmlops pipeline run` as a user runs it, on everything but the shared diabetes130 run:
the synthetic source end to end, a failing gate, and refusals before any data is read."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from hospital_mlops.data.snapshots import read_tables
from hospital_mlops.governance.phi_scan import raw_identifiers, scan
from tests.conftest import TEST_KEY
from tests.integration.conftest import artifact_sha, evidence_path, hmlops, run_json


def test_a_bad_extract_stops_at_its_gate_and_publishes_nothing(tmp_path) -> None:
    summary, proc = run_json(
        "--source", "diabetes130", "--scenario", "schema_drop", "--out", str(tmp_path)
    )
    assert proc.returncode == 1
    assert summary["status"] == "failed"
    assert [g["layer"] for g in summary["gates"]] == ["ingest"]
    failure = summary["gates"][0]["failures"][0]
    assert failure["source"] == "diabetes130" and failure["layer"] == "ingest"
    assert failure["expectation"] == "expect_table_columns_to_match_set"
    assert "max_glu_serum" in failure["observed"]
    assert [a["name"] for a in summary["artifacts"]] == ["source_extract", "raw"]
    assert not (tmp_path / "published").exists()
    # The raw snapshot is kept for investigation: nothing is lost.
    assert (tmp_path / "raw" / artifact_sha(summary, "raw")).is_dir()


def test_synthetic_multi_table_source_end_to_end(tmp_path) -> None:
    summary, proc = run_json(
        "--source", "synthetic", "--synthetic-encounters", "3000", "--out", str(tmp_path)
    )
    assert all(g["success"] for g in summary["gates"]), proc.stderr[-3000:]
    # A 3,000-encounter extract leaves ~600 test encounters: too few for the ECE gate, so the
    # model is logged (with its evidence) and NOT registered, and the run fails (exit 1).
    assert summary["model_gates_passed"] is False
    assert [g["name"] for g in summary["model_gates"] if not g["passed"]] == ["ece"]
    assert summary["model"]["version"] is None and summary["model"]["run_id"]
    evaluation = json.loads(Path(evidence_path(summary, "evaluation.json")).read_text())
    slices = set(evaluation["slices"])  # per site and per era (calendar quarter)
    assert {"site=NORTH", "site=EAST"} <= slices and any(s.startswith("era=20") for s in slices)
    report = Path(evidence_path(summary, "validation_report.html")).read_text()
    assert "Extra validation slices" in report and "era=" in report
    assert summary["status"] == "failed" and proc.returncode == 1
    kfp_dir = next((tmp_path / "runs" / summary["run_id"] / "kfp").iterdir())
    # the gates-failed branch ran (the second register task), the gates-passed branch did not
    assert (kfp_dir / "register-op-2").is_dir() and not (kfp_dir / "register-op").exists()
    raw_dir = Path(next(a["path"] for a in summary["artifacts"] if a["name"] == "raw"))

    raw = read_tables(raw_dir)
    ids = (
        raw_identifiers(raw["patients"]["mrn"])
        | raw_identifiers(raw["patients"]["patient_name"])
        | raw_identifiers(raw["encounters"]["encounter_id"])
        | raw_identifiers(
            raw["encounters"]["encounter_id"]
            .str.extract(r"(\d+)", expand=False)
            .astype(int)
            .map("ENC-{:08d}".format)
        )
    )
    hits = scan(
        tmp_path, ids, exclude=[tmp_path / "raw", tmp_path / "extracts"], texts=[proc.stderr]
    )
    assert hits == []


@pytest.mark.parametrize(
    ("args", "key", "message"),
    [
        (["--source", "diabetes130"], None, "HMLOPS_HMAC_KEY"),
        (["--source", "pharmacy"], TEST_KEY, "not in the data catalog"),
        (["--source", "synthetic", "--use", "quality_improvement"], TEST_KEY, "may not be used"),
        (["--source", "diabetes130", "--input", "/nonexistent/x.zip"], TEST_KEY, "does not exist"),
        (["--source", "diabetes130", "--scenario", "timezone_shift"], TEST_KEY, "does not apply"),
        (["--source", "diabetes130", "--scenario", "meteor"], TEST_KEY, "unknown scenario"),
    ],
)
def test_bad_requests_fail_fast_with_a_clear_message(args, key, message, tmp_path) -> None:
    proc = hmlops("pipeline", "run", "--out", str(tmp_path), *args, key=key)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "raw").exists()


def test_an_unreachable_registry_stops_the_run_before_any_data_is_read(tmp_path) -> None:
    env_uri = "http://127.0.0.1:9"
    os.environ["MLFLOW_TRACKING_URI"] = env_uri
    try:
        proc = hmlops("pipeline", "run", "--out", str(tmp_path))
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"the MLflow store at {env_uri} cannot be reached" in proc.stderr
    assert not (tmp_path / "raw").exists() and not (tmp_path / "runs").exists()


def test_unreadable_extract_and_malformed_catalog(tmp_path) -> None:
    bad_zip = tmp_path / "extract.zip"
    bad_zip.write_bytes(b"PK\x03\x04 this is not a zip")
    proc = hmlops("pipeline", "run", "--out", str(tmp_path), "--input", str(bad_zip))
    assert proc.returncode == 2 and "not a readable zip" in proc.stderr
    no_member = tmp_path / "other.zip"
    with zipfile.ZipFile(no_member, "w") as zf:
        zf.writestr("something.csv", "a,b\n1,2\n")
    proc = hmlops("pipeline", "run", "--out", str(tmp_path), "--input", str(no_member))
    assert proc.returncode == 2 and "no member 'dataset_diabetes/diabetic_data.csv'" in proc.stderr
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nuses: {}\nsources:\n  x: {system: 3}\n")
    proc = hmlops("pipeline", "run", "--out", str(tmp_path), "--catalog", str(catalog))
    assert proc.returncode == 2 and "sources.x.description" in proc.stderr
    assert "Traceback" not in proc.stderr
