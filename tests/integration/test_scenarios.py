"""Every named fault scenario is caught at its declared layer, and nothing is published."""

from __future__ import annotations

from pathlib import Path

import pytest

from hospital_mlops.data.faults import SCENARIOS, materialize_scenario, scenario
from hospital_mlops.steps import data as data_steps
from hospital_mlops.steps.data import LAYERS

PAIRS = [(name, source) for name, s in SCENARIOS.items() for source in sorted(s.sources)]
BASES = {"diabetes130": "d130_small", "synthetic": "synthetic_small"}


def _run(source: str, extract: Path, tmp_path: Path, run_id: str = "test-run") -> tuple[dict, Path]:
    store = tmp_path / "store"
    ctx = data_steps.RunContext(source, "readmission_risk_model", store, run_id)
    return data_steps.run_in_process(ctx, extract, tmp_path / run_id), store


@pytest.mark.parametrize("source", sorted(BASES))
def test_the_clean_extract_passes_every_gate_and_a_rerun_is_identical(
    source, request, tmp_path
) -> None:
    extract = request.getfixturevalue(BASES[source])
    summary, store = _run(source, extract, tmp_path)
    assert summary["status"] == "succeeded", summary.get("error")
    assert [g["layer"] for g in summary["gates"]] == ["ingest", "validate", "features"]
    assert (store / "published" / "features" / summary["final_artifact_sha256"]).is_dir()
    again, _ = _run(source, extract, tmp_path, run_id="rerun")
    assert again["run_id"] != summary["run_id"]
    hashes = [(a["name"], a["sha256"]) for a in summary["artifacts"]]
    assert [(a["name"], a["sha256"]) for a in again["artifacts"]] == hashes
    assert {name for name, _ in hashes} >= {"raw", "normalized", "features", "published_features"}


@pytest.mark.parametrize(("name", "source"), PAIRS)
def test_scenario_is_caught_at_the_earliest_layer(name, source, request, tmp_path, catalog):
    base = request.getfixturevalue(BASES[source])
    _, expected = scenario(name, source)
    extract = materialize_scenario(name, source, catalog.source(source), base, tmp_path / "x")
    summary, store = _run(source, extract, tmp_path)

    assert summary["status"] == "failed"
    failed = [g for g in summary["gates"] if not g["success"]]
    assert len(failed) == 1, "only the first gate that sees a fault may fail"
    gate = failed[0]
    assert gate["layer"] == expected.layer
    later = LAYERS[LAYERS.index(expected.layer) + 1 :]
    assert not [g for g in summary["gates"] if g["layer"] in later], "a later stage ran"
    match = [
        f
        for f in gate["failures"]
        if f["table"] == expected.table
        and (f["column"] or "*") == expected.column
        and f["expectation"] == expected.expectation
    ]
    assert match, f"expected {expected}, got {gate['failures']}"
    assert match[0]["source"] == source and match[0]["observed"]
    assert not (store / "published").exists(), "a failed run published something"
    assert summary["final_artifact_sha256"] is None
    assert source in summary["error"] and expected.layer in summary["error"]
