"""The privacy and security review's parts: controls tied to tests that exist, their results
read from JUnit XML (a failing or absent test is never reported as passed), and the checks made
when a packet is built."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from hospital_mlops.governance.controls import CONTROLS, evaluate, read_junit
from hospital_mlops.governance.review import (
    demo_key_check,
    pip_audit_check,
    registry_phi_check,
    telemetry_check,
)

ROOT = Path(__file__).resolve().parents[2]


def _test_functions(module: str) -> set[str]:
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        return set()
    tree = ast.parse(path.read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            and n.name.startswith("test_")}  # fmt: skip


@pytest.mark.parametrize("control", CONTROLS, ids=lambda c: c.id)
def test_every_control_names_tests_that_exist(control) -> None:
    for selector in control.tests:
        module, _, prefix = selector.partition("::")
        names = _test_functions(module)
        assert names, f"{control.id}: no test module {module}"
        assert any(n.startswith(prefix) for n in names), f"{control.id}: nothing matches {selector}"


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest">
<testcase classname="tests.unit.test_cds_auth" name="test_replayed_jti_is_refused"/>
<testcase classname="tests.unit.test_cds_auth" name="test_expired_token_is_refused"
>{failure}</testcase>
<testcase classname="tests.unit.test_cds_service" name="test_unsigned_call_is_refused"/>
<testcase classname="tests.unit.test_sbom" name="test_alibi_is_flagged"/>
<testcase classname="tests.unit.test_sbom" name="test_other"><skipped message="x"/></testcase>
<testcase classname="tests.unit.test_manifests" name="test_checkov_passes[production]"/>
<testcase classname="tests.unit.test_egress_guard" name="test_a_socket_is_refused"/>
</testsuite></testsuites>
"""


def _results(tmp_path: Path, failure: str) -> dict:
    path = tmp_path / "junit.xml"
    path.write_text(JUNIT.format(failure=failure))
    return {r.control.id: r for r in evaluate(read_junit(path))}


def test_a_control_passes_only_when_all_its_tests_ran_and_passed(tmp_path: Path) -> None:
    results = _results(tmp_path, "")
    # both of its modules have results, and every one passed
    assert results["cds-jwt"].status == "passed" and results["cds-jwt"].passed == 3
    assert results["checkov"].status == "passed"
    # one test passed, one was skipped: the skipped one was not shown to hold
    sbom = results["sbom"]
    assert sbom.status == "not run" and sbom.passed == 1 and sbom.skipped == 1
    assert "tests.unit.test_sbom::test_other" in sbom.why_not_run
    # test_egress_guard passed, but the demo's egress test has no result at all
    egress = results["no-egress"]
    assert egress.status == "not run" and egress.passed == 1
    assert egress.not_found == ("tests.demo.test_guarded_demo::test_nothing_leaves_the_machine",)
    assert "no result for tests.demo.test_guarded_demo" in egress.why_not_run
    assert results["phi-ingest"].status == "not run" and results["phi-ingest"].passed == 0
    assert all(r.status == "not run" for r in evaluate(None))


def test_one_failing_test_fails_its_control_and_is_named(tmp_path: Path) -> None:
    results = _results(tmp_path, '<failure message="boom">trace</failure>')
    assert results["cds-jwt"].status == "failed"
    failed = "tests.unit.test_cds_auth::test_expired_token_is_refused"
    assert results["cds-jwt"].failures == (failed,)
    assert results["checkov"].status == "passed"  # a failure elsewhere touches no other control


def test_telemetry_switches_must_all_be_off() -> None:
    on = {"MLFLOW_DISABLE_TELEMETRY": "true", "GX_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    assert telemetry_check(on).status == "passed"
    check = telemetry_check({**on, "GX_ANALYTICS_ENABLED": "true"})
    assert check.status == "failed" and "GX_ANALYTICS_ENABLED" in check.detail


def test_the_demo_key_is_read_from_the_lineage() -> None:
    assert demo_key_check([{"hmac_key_id": "demo-2ad28302fdc8", "demo_key": True}]).status == (
        "warning"
    )
    site = demo_key_check([{"kind": "features", "hmac_key_id": "3f9a0c1d2e4b"}])
    assert site.status == "passed" and "3f9a0c1d2e4b" in site.detail
    assert demo_key_check([]).status == "not run"


def test_an_identifier_in_a_registry_value_fails_the_check() -> None:
    ids = {"181091094", "Jane Q Public"}
    clean = {"param source": "source diabetes130", "tag note": "n 1234"}
    assert registry_phi_check(clean, ids).status == "passed"
    leaked = {**clean, "version tag example": "example encounter 181091094 readmitted"}
    check = registry_phi_check(leaked, ids)
    assert check.status == "failed" and "version tag example" in check.detail
    assert registry_phi_check(clean, None).status == "not run"


def test_pip_audit_results_are_read_not_assumed(tmp_path: Path) -> None:
    report = tmp_path / "audit.json"
    report.write_text(json.dumps({"dependencies": [
        {"name": "numpy", "version": "1.26.4", "vulns": []},
        {"name": "oldlib", "version": "0.1", "vulns": [{"id": "PYSEC-2099-1", "fix_versions": []}]},
    ]}))  # fmt: skip
    check = pip_audit_check(report)
    assert check.status == "failed" and "oldlib: PYSEC-2099-1" in check.detail
    report.write_text(json.dumps({"dependencies": [{"name": "numpy", "vulns": []}]}))
    assert pip_audit_check(report).status == "passed"
    # unreachable service: pip-audit skips every dependency and says "no known vulnerabilities"
    report.write_text(json.dumps({"dependencies": [
        {"name": "numpy", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "pandas", "skip_reason": "Dependency not found on PyPI and could not be audited"},
        {"name": "hospital-mlops", "skip_reason": "not on PyPI"},
    ], "fixes": []}))  # fmt: skip
    check = pip_audit_check(report)
    assert check.status == "not run" and "could not audit any of 2" in check.detail
    report.write_text(json.dumps({"dependencies": [
        {"name": "numpy", "version": "1.26.4", "vulns": []},
        {"name": "pandas", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    ]}))  # fmt: skip
    check = pip_audit_check(report)
    assert check.status == "warning" and "1 could not be audited: pandas" in check.detail
    report.write_text("not json")
    assert pip_audit_check(report).status == "failed"
    assert pip_audit_check(None).status == "not run"


@pytest.mark.parametrize(
    ("missing", "failed", "not_run", "code"),
    [([], [], [], 0), ([], [], ["pip-audit"], 3), ([], ["sbom"], [], 3), (["x"], [], [], 3)],
)
def test_strict_fails_on_anything_missing_failed_or_not_run(
    monkeypatch, tmp_path: Path, missing, failed, not_run, code
) -> None:
    from hospital_mlops.cli.main import run_captured
    from hospital_mlops.governance import packet

    def built(request: packet.PacketRequest) -> packet.Packet:
        return packet.Packet(request.out, [], missing, failed, not_run)

    monkeypatch.setattr(packet, "build_packet", built)
    results = tmp_path / "results.xml"
    results.write_text(JUNIT.format(failure=""))
    argv = ["governance", "packet", "--model", "m", "--version", "1", "--out",
            str(tmp_path / "p.zip"), "--test-results", str(results)]  # fmt: skip
    assert run_captured([*argv, "--strict"])[0] == code
    absent = run_captured([*argv[:-1], str(tmp_path / "none.xml")])
    assert absent[0] == 2 and "none.xml does not exist" in absent[2]
    assert run_captured(argv)[0] == 0  # without --strict it only reports
    shown = run_captured(argv)[1]
    assert f"review items not run: {', '.join(not_run) or 'none'}" in shown


def test_the_review_reads_every_suites_results_together(tmp_path: Path) -> None:
    """`make test` has no demo run; the demo suite's own file carries the egress test: read
    together, the control holds; from one file alone, it did not run."""
    from hospital_mlops.governance.review import review

    unit = tmp_path / "test-results.xml"
    unit.write_text(JUNIT.format(failure=""))
    demo = tmp_path / "test-results-demo.xml"
    demo.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">'
        '<testcase classname="tests.demo.test_guarded_demo" '
        'name="test_nothing_leaves_the_machine"/></testsuite></testsuites>'
    )
    alone = {r.control.id: r for r in review([unit], []).controls}
    together = review([unit, demo], [])
    assert alone["no-egress"].status == "not run"
    assert {r.control.id: r for r in together.controls}["no-egress"].status == "passed"
    assert together.test_results == "test-results.xml, test-results-demo.xml"
    assert all(r.status == "not run" for r in review([], []).controls)
