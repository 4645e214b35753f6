"""The PrometheusRule alerts (kustomize/alerts/alerts.yaml) under Prometheus's own rule tester:
``promtool check rules`` and ``promtool test rules`` (Debian's ``prometheus`` package;
``make test-validators`` installs it). Each alert fires on a series that should trip it and
stays quiet on one that should not (tests/validators/alerts_test.yaml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.unit.test_manifests import require_tool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "kustomize" / "alerts" / "alerts.yaml"
TESTS = Path(__file__).with_name("alerts_test.yaml")


def _promtool() -> str:
    return require_tool(
        "promtool", shutil.which("promtool"), "Debian's prometheus package: make test-validators"
    )


def _alerts() -> list[str]:
    rule = yaml.safe_load(RULES.read_text())
    return [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The PrometheusRule's groups as the plain rules file promtool reads, beside the tests."""
    rule = yaml.safe_load(RULES.read_text())
    groups = {"groups": rule["spec"]["groups"]}
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(groups, width=1000, sort_keys=False))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def _run(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid_and_their_unit_tests_pass(workdir: Path) -> None:
    promtool = _promtool()
    checked = _run(promtool, "check", "rules", "rules.yaml", cwd=workdir)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_alerts())} rules found" in checked.stdout
    tested = _run(promtool, "test", "rules", TESTS.name, cwd=workdir)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [
        case
        for test in yaml.safe_load(TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in _alerts():
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it stays quiet"


def test_the_tests_fail_when_an_alert_is_weakened(workdir: Path) -> None:
    """An alert that no longer fires on a loss is caught: the threshold raised past the test's
    losses, promtool's tests fail."""
    promtool = _promtool()
    rules = (workdir / "rules.yaml").read_text()
    assert ") > 0" in rules
    (workdir / "rules.yaml").write_text(rules.replace(") > 0", ") > 100"))
    tested = _run(promtool, "test", "rules", TESTS.name, cwd=workdir)
    assert tested.returncode != 0 and "FAILED" in tested.stdout + tested.stderr
