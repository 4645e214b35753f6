"""The pipeline through `hmlops pipeline run` (kfp.local SubprocessRunner), as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from hospital_mlops.sources.extract import read_extract
from tests.conftest import TEST_KEY
from tests.phi_scan import raw_identifiers, scan

D130_EXTRACT_SHA = "3a17a3b55b6dd4a1926703185c0ad8e2ed30bc8e2f9b927cdd1000b733d1de8e"
HMLOPS = [sys.executable, "-m", "hospital_mlops.cli"]


def hmlops(*args: str, key: str | None = TEST_KEY) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HMLOPS_HMAC_KEY",)}
    if key:
        env["HMLOPS_HMAC_KEY"] = key
    return subprocess.run([*HMLOPS, *args], capture_output=True, text=True, env=env, timeout=900)


def run_json(*args: str) -> tuple[dict, subprocess.CompletedProcess[str]]:
    proc = hmlops("pipeline", "run", "--json", *args)
    return json.loads(proc.stdout), proc


@pytest.fixture(scope="module")
def d130_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("d130_store")
    first, p1 = run_json("--source", "diabetes130", "--out", str(out))
    second, p2 = run_json("--source", "diabetes130", "--out", str(out))
    return out, first, second, p1, p2


def _sha(summary: dict, name: str) -> str:
    return next(a["sha256"] for a in summary["artifacts"] if a["name"] == name)


def test_contract_and_success_on_the_real_dataset(d130_runs) -> None:
    _out, first, _, proc, _ = d130_runs
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"status", "run_id", "gates", "artifacts", "lineage_path", "metrics"} <= set(first)
    assert first["status"] == "succeeded"
    assert [(g["layer"], g["success"]) for g in first["gates"]] == [
        ("ingest", True),
        ("validate", True),
        ("features", True),
    ]
    assert all(set(g) >= {"layer", "name", "success", "failures"} for g in first["gates"])
    names = [a["name"] for a in first["artifacts"]]
    assert names == ["source_extract", "raw", "normalized", "features", "published_features"]
    for art in first["artifacts"]:
        assert re.fullmatch(r"[0-9a-f]{64}", art["sha256"]) and Path(art["path"]).exists()
    assert _sha(first, "source_extract") == D130_EXTRACT_SHA
    assert first["metrics"]["raw_rows"] == 101_766
    assert 95_000 < first["metrics"]["features_rows"] < 101_766  # deaths/hospice excluded
    published = Path(
        next(a["path"] for a in first["artifacts"] if a["name"] == "published_features")
    )
    frame = pd.read_parquet(published / "tables" / "features.parquet")
    assert 0.10 < frame["readmitted_30d"].mean() < 0.13


def test_rerun_gives_identical_snapshot_hashes(d130_runs) -> None:
    _, first, second, _, p2 = d130_runs
    assert p2.returncode == 0
    assert first["run_id"] != second["run_id"]
    for name in ("raw", "normalized", "features", "published_features"):
        assert _sha(first, name) == _sha(second, name)


def test_lineage_resolves_to_the_source_extract(d130_runs) -> None:
    out, first, _, _, _ = d130_runs
    for ref in (first["run_id"], _sha(first, "published_features")[:12]):
        proc = hmlops("lineage", ref, "--out", str(out), "--json")
        assert proc.returncode == 0, proc.stderr
        chain = json.loads(proc.stdout)
        assert [n["kind"] for n in chain] == ["features", "normalized", "raw", "source_extract"]
        assert chain[-1]["sha256"] == D130_EXTRACT_SHA
        assert chain[0]["feature_set_version"].startswith("readmission_diabetes130@")
        assert {"catalog_version", "code_version", "created_at", "parents"} <= set(chain[0])
        assert {"git_sha", "dirty"} <= set(chain[0]["code_version"])
        assert set(chain[0]["gate_suites"]) == {"ingest", "validate", "features"}
    text = hmlops("lineage", first["run_id"], "--out", str(out)).stdout
    assert "source_extract 3a17a3b55b6dd4a1" in text


def test_reports_are_self_contained(d130_runs) -> None:
    out, first, _, _, _ = d130_runs
    pages = list((out / "runs" / first["run_id"] / "gates").glob("*.html"))
    assert len(pages) == 3
    for page in pages:
        html = page.read_text()
        assert "<style>" in html and "PASSED" in html
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page
        assert "<script" not in html
    md = (out / "runs" / first["run_id"] / "gates" / "validate.md").read_text()
    assert "Gate `normalized` — PASSED" in md


def test_no_raw_identifier_leaves_the_ingest_layer(d130_runs, catalog, d130_full) -> None:
    out, _, _, p1, p2 = d130_runs
    raw = read_extract(d130_full, catalog.source("diabetes130"))["encounters"]
    ids = raw_identifiers(raw["encounter_id"]) | raw_identifiers(raw["patient_nbr"])
    assert len(ids) > 90_000
    hits = scan(
        out,
        ids,
        exclude=[out / "raw", out / "extracts"],
        texts=[p1.stderr, p2.stderr, p1.stdout, p2.stdout],
    )
    assert hits == []
    # The scanner does find identifiers where they legitimately are (the PHI raw zone).
    assert scan(out / "raw", ids)


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
    assert (tmp_path / "raw" / _sha(summary, "raw")).is_dir()


def test_synthetic_multi_table_source_end_to_end(tmp_path) -> None:
    summary, proc = run_json(
        "--source", "synthetic", "--synthetic-encounters", "3000", "--out", str(tmp_path)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert summary["status"] == "succeeded"
    raw_dir = Path(next(a["path"] for a in summary["artifacts"] if a["name"] == "raw"))
    from hospital_mlops.snapshots import read_tables

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
