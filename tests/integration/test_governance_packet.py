"""`hmlops governance packet|verify` on the session's real registered model: what is in the
packet, that every file is hashed, that verify names any change, and that the packet refuses
evidence changed since registration and reports an identifier in the registry."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.integration.conftest import REVIEW_ROLES, hmlops, hmlops_here

MODEL = "readmission-30d"
JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.unit.test_cds_auth" name="test_a_replayed_jti_is_refused"/>
<testcase classname="tests.unit.test_cds_service" name="test_an_unsigned_call_is_refused"/>
<testcase classname="tests.unit.test_egress_guard" name="test_a_socket_is_refused"/>
<testcase classname="tests.unit.test_sbom" name="test_alibi_is_flagged"><failure message="x"/>
</testcase>
</testsuite></testsuites>
"""


@pytest.fixture(scope="module")
def packet(d130_runs, d130_champion, tmp_path_factory) -> tuple[dict, Path, Path]:
    store = d130_runs[0]
    work = tmp_path_factory.mktemp("packet")
    junit = work / "results.xml"
    junit.write_text(JUNIT)
    out = work / "packet.zip"
    proc = hmlops("governance", "packet", "--model", MODEL, "--version", str(d130_champion),
                  "--out", str(out), "--store", str(store), "--test-results", str(junit),
                  "--json")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), out, store


def _read(out: Path, name: str) -> bytes:
    with zipfile.ZipFile(out) as archive:
        return archive.read(name)


def test_the_packet_holds_what_the_review_board_asks_for(packet, d130_champion) -> None:
    from hospital_mlops.governance import registry

    printed, out, _ = packet
    assert printed["path"] == str(out) and isinstance(printed["missing"], list)
    names = {f["name"] for f in printed["files"]}
    assert {
        "index.html", "use_case/use_case.yaml", "use_case/intended_use.md",
        "data/catalog_entry.json", "data/lineage.json",
        "evidence/validation_report.html", "evidence/model_card.html",
        "evidence/hti1_source_attributes.json", "review/privacy_security_review.html",
        "policies/monitoring.yaml", "policies/rollout.yaml", "policies/retirement.md",
        "signoffs.json", "supply_chain/licenses.csv", "supply_chain/sbom.cdx.json",
    } <= names  # fmt: skip
    # every file listed with the hash of its bytes in the zip
    for f in printed["files"]:
        assert f["sha256"] == __import__("hashlib").sha256(_read(out, f["name"])).hexdigest()
    # the evidence is the registered evidence, byte for byte
    version = registry.client().get_model_version(MODEL, str(d130_champion))
    registered = json.loads(version.tags["evidence.sha256"])
    listed = {f["name"]: f["sha256"] for f in printed["files"]}
    assert listed["evidence/validation_report.html"] == registered["validation_report.html"]
    assert listed["evidence/model_card.json"] == registered["model_card.json"]
    # per-row data and the unsuppressed evaluation stay in the registry, listed by hash
    assert not {"evidence/test_predictions.parquet", "evidence/evaluation.json"} & names
    assert set(json.loads(_read(out, "evidence/registered_sha256.json"))) == set(registered)
    # lineage back to the source extract; the sign-offs as recorded
    chain = json.loads(_read(out, "data/lineage.json"))["chain"]
    assert chain[-1]["kind"] == "source_extract" or any(
        n["kind"] == "source_extract" for n in chain
    )
    signoffs = json.loads(_read(out, "signoffs.json"))
    assert set(signoffs["signed"]) == set(REVIEW_ROLES) and signoffs["missing_roles"] == []
    assert "champion" in signoffs["aliases"]
    # the missing list names what a reviewer must chase (no pip-audit result was given)
    assert any(m.startswith("supply_chain/pip-audit.json") for m in printed["missing"])
    page = _read(out, "index.html").decode()
    assert "<script" not in page and "http://" not in page and "https://" not in page


def test_justifications_written_after_the_evaluation_are_listed_as_post_hoc(packet) -> None:
    printed, out, _ = packet
    gates = json.loads(_read(out, "evidence/gates.json"))
    records = gates["justifications"]
    # the demo's justifications say they were written after this model's evaluation
    assert records and all(r["post_hoc"] and r["by"] for r in records), records
    listed = [m for m in printed["missing"] if m.startswith("use_case: the justification of")]
    assert len(listed) == len(records)
    assert all("post hoc, not declared beforehand" in m for m in listed)
    report = _read(out, "evidence/validation_report.html").decode()
    assert report.count("; post hoc)") == len(records)


def test_the_review_reports_the_checks_with_their_results(packet) -> None:
    printed, out, _ = packet
    review = json.loads(_read(out, "review/privacy_security_review.json"))
    controls = {c["id"]: c for c in review["controls"]}
    assert controls["cds-jwt"]["status"] == "passed"
    assert controls["sbom"]["status"] == "failed"  # the failing test in the results given
    # one of its two tests has a result: the other was not shown to hold, so not run
    assert controls["no-egress"]["status"] == "not run" and controls["no-egress"]["tests_passed"]
    assert controls["no-egress"]["selectors_without_results"] == [
        "tests.demo.test_guarded_demo::test_nothing_leaves_the_machine"
    ]
    assert controls["phi-ingest"]["status"] == "not run"  # none of its tests in those results
    # what did not run is listed for the reader, never counted as a pass
    assert {"no-egress", "phi-ingest", "pip-audit"} <= set(printed["review_not_run"])
    assert "sbom" not in printed["review_not_run"]
    assert any(
        m.startswith("review control no-egress (not run): no result for")
        for m in printed["missing"]
    )
    assert any(m.startswith("review pip-audit (not run)") for m in printed["missing"])
    checks = {c["id"]: c for c in review["checks"]}
    assert checks["phi-registry"]["status"] == "passed"
    assert checks["phi-packet"]["status"] == "passed"
    assert checks["telemetry-off"]["status"] == "passed"
    assert checks["licences"]["status"] == "warning" and "alibi" in checks["licences"]["detail"]
    assert "sbom" in printed["review_failed"]


def test_verify_passes_the_packet_and_names_every_change(packet, tmp_path: Path) -> None:
    _, out, _ = packet
    ok = hmlops_here("governance", "verify", str(out))
    assert ok.returncode == 0 and "match the manifest" in ok.stdout

    def rewrite(target: Path, change) -> Path:
        with zipfile.ZipFile(out) as src, zipfile.ZipFile(target, "w") as dst:
            for item in src.infolist():
                data = change(item.filename, src.read(item.filename))
                if data is not None:
                    dst.writestr(item, data)
        return target

    altered = rewrite(
        tmp_path / "altered.zip",
        lambda n, d: (
            d.replace(b"</body>", b"<p>edited</p></body>") if n == "evidence/model_card.html" else d
        ),
    )
    removed = rewrite(tmp_path / "removed.zip", lambda n, d: None if n == "signoffs.json" else d)
    added = rewrite(tmp_path / "added.zip", lambda n, d: d)
    with zipfile.ZipFile(added, "a") as archive:
        archive.writestr("evidence/extra_note.txt", "added later")
    for path, label, name in (
        (altered, "altered", "evidence/model_card.html"),
        (removed, "missing", "signoffs.json"),
        (added, "added (not in the manifest)", "evidence/extra_note.txt"),
    ):
        result = hmlops_here("governance", "verify", str(path))
        assert result.returncode == 1, (label, result.stdout)
        assert f"{label}: {name}" in result.stderr
    # bytes flipped inside the zip without a new CRC: still caught, as altered
    corrupt = tmp_path / "corrupt.zip"
    shutil.copyfile(out, corrupt)
    with zipfile.ZipFile(out) as archive:
        info = archive.getinfo("signoffs.json")
    blob = bytearray(corrupt.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    blob[start + 5] ^= 0xFF
    corrupt.write_bytes(bytes(blob))
    result = hmlops_here("governance", "verify", str(corrupt), "--json")
    assert result.returncode == 1 and json.loads(result.stdout)["altered"] == ["signoffs.json"]
    not_a_zip = tmp_path / "note.zip"
    not_a_zip.write_text("hello")
    result = hmlops_here("governance", "verify", str(not_a_zip))
    assert result.returncode == 1 and "not a readable zip" in result.stderr


def test_evidence_changed_since_registration_stops_the_packet(packet, d130_champion, tmp_path):
    from hospital_mlops.governance import registry
    from hospital_mlops.paths import state_dir

    _, _, store = packet
    run_id = registry.client().get_model_version(MODEL, str(d130_champion)).run_id
    card = next(state_dir().glob(f"mlartifacts/**/{run_id}/artifacts/evidence/model_card.html"))
    original = card.read_bytes()
    out = tmp_path / "packet.zip"
    try:
        card.write_bytes(original.replace(b"</body>", b"<!-- edited --></body>"))
        args = ["--model", MODEL, "--version", str(d130_champion), "--store", str(store)]
        proc = hmlops_here("governance", "packet", *args, "--out", str(out))
    finally:
        card.write_bytes(original)
    assert proc.returncode == 1
    assert "model_card.html changed since registration" in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []  # nothing half-written


def test_an_identifier_in_the_registry_fails_the_privacy_check(packet, d130_champion, d130_full):
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.sources.extract import read_extract
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.packet import PacketRequest, build_packet

    _, out, store = packet
    raw = read_extract(d130_full, load_catalog().source("diabetes130"))["encounters"]
    leaked = str(raw["encounter_id"].iloc[-1])
    c = registry.client()
    c.set_model_version_tag(MODEL, str(d130_champion), "note", f"example encounter {leaked}")
    try:
        result = build_packet(PacketRequest(MODEL, d130_champion, out.with_name("leak.zip"), store))
    finally:
        c.delete_model_version_tag(MODEL, str(d130_champion), "note")
    assert "phi-registry" in result.review_failed
    review = json.loads(_read(result.path, "review/privacy_security_review.json"))
    check = next(c for c in review["checks"] if c["id"] == "phi-registry")
    assert "version tag note" in check["detail"] and leaked not in json.dumps(review)


def test_an_unknown_version_is_a_clear_error(tmp_path: Path) -> None:
    proc = hmlops_here("governance", "packet", "--model", MODEL, "--version", "999",
                       "--out", str(tmp_path / "p.zip"))  # fmt: skip
    assert proc.returncode == 2 and "has no version 999" in proc.stderr
    assert not (tmp_path / "p.zip").exists()
