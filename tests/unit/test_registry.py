"""The MLflow registry on a real SQLite store: gated registration, sign-offs, promotion,
golden predictions, and an unreachable store."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.features import FeatureSet, feature_set_for
from hospital_mlops.governance import registration, registry
from hospital_mlops.model.train import train_risk_model
from hospital_mlops.use_case import TrainingConfig

ROLES = ["clinical", "technical", "privacy", "compliance"]


def _features(
    n: int, seed: int, fs: FeatureSet | None = None, driver: str = "inpatient_admissions_prior_year"
) -> pd.DataFrame:
    """Random rows of a feature set's features, with a label that rises with ``driver``."""
    fs = fs or feature_set_for("diabetes130")
    rng = np.random.default_rng(seed)
    columns = {}
    for f in fs.features:
        if f.kind == "categorical":
            columns[f.name] = rng.choice(list(f.allowed or ()), n)
        elif f.kind == "binary":
            columns[f.name] = rng.integers(0, 2, n).astype(float)
        else:
            columns[f.name] = rng.uniform(f.min_value or 0, f.max_value or 10, n)
    frame = pd.DataFrame(columns)
    logit = -2 + 0.08 * frame[driver] - 0.01 * frame["age_years"]
    frame[fs.label] = rng.binomial(1, 1 / (1 + np.exp(-logit)))
    return frame


@pytest.fixture(scope="module")
def candidate_parts(tmp_path_factory):
    fs = feature_set_for("diabetes130")
    model = train_risk_model(
        _features(3000, 1), _features(1000, 2), fs, TrainingConfig(max_rounds=30)
    )
    work = tmp_path_factory.mktemp("candidate")
    model.save(work / "risk_model")
    golden = _features(200, 3)[[f.name for f in fs.features]]
    golden["expected_risk"] = model.predict_risk(golden, fs)
    report = work / "validation_report.html"
    report.write_text("<html>report</html>")
    return work, golden, report


def _candidate(parts, passed: bool) -> registration.Candidate:
    work, golden, report = parts
    return registration.Candidate(
        model_dir=work / "risk_model",
        evidence={"validation_report.html": report},
        params={"source": "diabetes130"},
        metrics={"auroc": 0.66},
        tags={"intended_use": "test"},
        gates_passed=passed,
        input_example=golden.drop(columns=["expected_risk"]).head(3),
        golden=golden,
    )


def test_only_a_gated_model_is_registered_and_promotion_needs_every_signoff(
    candidate_parts,
) -> None:
    name = "test-registry-flow"
    rejected = registration.log_candidate(name, _candidate(candidate_parts, passed=False))
    assert rejected["version"] is None and rejected["run_id"]
    with pytest.raises(registry.RegistryError, match="no registered model"):
        registry.show(name)

    accepted = registration.log_candidate(name, _candidate(candidate_parts, passed=True))
    version = accepted["version"]
    assert version == 1
    report_hash = accepted["evidence_sha256"]["validation_report.html"]
    with pytest.raises(registry.PromotionRefused, match="clinical sign-off, technical sign-off"):
        registration.promote(name, version, "champion", ROLES)
    for role in ROLES[:3]:
        registration.sign_off(name, version, role, f"Reviewer {role}", "looked at the report")
    with pytest.raises(registry.PromotionRefused, match=r"missing: compliance sign-off$"):
        registration.promote(name, version, "champion", ROLES)
    registration.sign_off(name, version, "compliance", "Reviewer compliance")
    registration.promote(name, version, "champion", ROLES)

    shown = registry.show(name)
    (v,) = shown["versions"]
    assert v["aliases"] == ["champion"] and set(v["signoffs"]) == set(ROLES)
    assert v["signoffs"]["clinical"]["by"] == "Reviewer clinical"
    assert v["tags"][registry.GATES_TAG] == "true"
    assert json.loads(v["tags"]["evidence.sha256"])["validation_report.html"] == report_hash

    checked = registry.verify_golden(registry.model_uri(name, "champion"))
    assert checked["rows"] == 200 and checked["max_abs_difference"] < 1e-9


def test_bad_signoffs_and_versions_are_refused(candidate_parts) -> None:
    name = "test-registry-bad"
    version = registration.log_candidate(name, _candidate(candidate_parts, passed=True))["version"]
    with pytest.raises(registry.RegistryError, match="role must be one of"):
        registration.sign_off(name, version, "janitor", "X")
    with pytest.raises(registry.RegistryError, match="needs the name"):
        registration.sign_off(name, version, "clinical", "  ")
    with pytest.raises(registry.RegistryError, match="has no version 99"):
        registration.sign_off(name, 99, "clinical", "X")


def test_a_tampered_model_fails_its_golden_check(candidate_parts, monkeypatch) -> None:
    name = "test-registry-golden"
    work, golden, report = candidate_parts
    shifted = golden.assign(expected_risk=golden["expected_risk"] + 0.01)
    parts = (work, shifted, report)
    version = registration.log_candidate(name, _candidate(parts, passed=True))["version"]
    with pytest.raises(registry.GoldenMismatch, match=r"largest difference 0\.01"):
        registry.verify_golden(registry.model_uri(name, str(version)))


def test_an_unreachable_store_fails_fast_with_its_uri(monkeypatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:secret@127.0.0.1:9")
    with pytest.raises(registry.RegistryUnavailable, match=r"http://\*\*\*@127\.0\.0\.1:9") as err:
        registry.client()
    assert "secret" not in str(err.value)


def test_a_model_that_fails_its_golden_check_is_never_served(candidate_parts) -> None:
    from serving.server import ModelNotReady, serve_predictor

    name = "test-registry-not-served"
    work, golden, report = candidate_parts
    parts = (work, golden.assign(expected_risk=golden["expected_risk"] + 0.01), report)
    version = registration.log_candidate(name, _candidate(parts, passed=True))["version"]
    with pytest.raises(ModelNotReady, match=r"GoldenMismatch: .* does not reproduce"):
        serve_predictor(name, str(version), port=1)  # raises before any socket is opened


def _start_tracking_server(store: Path, port: int) -> subprocess.Popen[bytes]:
    """``mlflow server`` on 127.0.0.1 over a SQLite store: the registry as a cluster has it
    (a tracking server in front of a database), in its own process group so it can be killed
    whole."""
    argv = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", f"sqlite:///{store / 'mlflow.db'}",
            "--artifacts-destination", str(store / "artifacts"), "--workers", "1"]  # fmt: skip
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    from serving.readiness import NotReady, wait_until_ready

    log_file = store / "server.log"
    with log_file.open("ab") as log:
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/health", process, log_file, 120)
    except NotReady as exc:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError(f"{exc}\n{log_file.read_text()[-2000:]}") from None
    return process


def test_a_registry_that_goes_away_during_registration_fails_clearly_and_changes_no_alias(
    candidate_parts, monkeypatch, tmp_path
) -> None:
    """The tracking server dies (a node drained, an OOM kill) just as a version is being
    registered: a clear failure saying what was written, and in the registry's database no
    half version and the champion unchanged."""
    import mlflow

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    for name in registry.HTTP_DEFAULTS:  # the registry's own bounds: fail now, not in minutes
        monkeypatch.delenv(name, raising=False)
    server = _start_tracking_server(tmp_path, port)
    name = "test-registry-gone"
    try:
        first = registration.log_candidate(name, _candidate(candidate_parts, True))
        for role in ROLES:
            registration.sign_off(name, first["version"], role, f"Test {role} reviewer")
        registration.promote(name, first["version"], "champion", ROLES)
        original = mlflow.register_model

        def register_after_the_server_died(*args, **kwargs):
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
            return original(*args, **kwargs)

        monkeypatch.setattr(mlflow, "register_model", register_after_the_server_died)
        with pytest.raises(registration.RegistrationFailed) as err:
            registration.log_candidate(name, _candidate(candidate_parts, True))
        message = str(err.value)
        assert f"http://127.0.0.1:{port}" in message and "failed during registration" in message
        assert "the run " in message and "was logged" in message
        # the server may have created the version before it died: only the registry can say
        assert "whether a version was registered could not be checked" in message
        assert "no alias changed" in message
        monkeypatch.setattr(mlflow, "register_model", original)
        # the registry's own database, read directly: what a restarted server would serve
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        assert [v["version"] for v in registry.show(name)["versions"]] == [first["version"]]
        champion = registry.client().get_model_version_by_alias(name, "champion")
        assert int(champion.version) == first["version"]
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def test_a_store_locked_during_registration_fails_clearly_and_changes_no_alias(
    candidate_parts, monkeypatch
) -> None:
    """Another process holds the SQLite store (a backup, a long migration) just as a version
    is being registered: a clear failure saying what was written, no half version, and the
    champion unchanged."""
    import sqlite3

    import mlflow

    from hospital_mlops.paths import state_dir

    name = "test-registry-locked"
    first = registration.log_candidate(name, _candidate(candidate_parts, True))
    for role in ROLES:
        registration.sign_off(name, first["version"], role, f"Test {role} reviewer")
    registration.promote(name, first["version"], "champion", ROLES)
    original = mlflow.register_model
    held: list[sqlite3.Connection] = []

    def register_while_locked(*args, **kwargs):
        lock = sqlite3.connect(state_dir() / "mlflow.db", isolation_level=None, timeout=30)
        lock.execute("BEGIN EXCLUSIVE")
        held.append(lock)
        return original(*args, **kwargs)

    monkeypatch.setattr(mlflow, "register_model", register_while_locked)
    try:
        with pytest.raises(registration.RegistrationFailed, match="locked") as err:
            registration.log_candidate(name, _candidate(candidate_parts, True))
    finally:
        for lock in held:
            lock.execute("ROLLBACK")
            lock.close()
    message = str(err.value)
    assert "the run " in message and "was logged" in message
    assert "no version was registered" in message and "no alias changed" in message
    assert [v["version"] for v in registry.show(name)["versions"]] == [first["version"]]
    champion = registry.client().get_model_version_by_alias(name, "champion")
    assert int(champion.version) == first["version"]
