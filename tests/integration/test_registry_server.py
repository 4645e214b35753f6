"""The registry as a cluster runs it: a real ``mlflow server`` with PostgreSQL as its backend store
and artifacts proxied to a local directory (``mlflow-artifacts:``). A registration, the
sign-offs, the promotion and the predictor's load of the champion run through it; a server that
cannot be reached, answers 5xx, drops its connections or never answers is one clear line.

Faults are real: a fault proxy (tests/fault_proxy.py) in front of the server fails the chosen
requests, a closed port refuses, a socket that never accepts never answers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from e2e.local_mlflow import LocalMlflow
from e2e.local_postgres import free_port
from hospital_mlops.cli.main import run_captured
from hospital_mlops.features import feature_set_for
from hospital_mlops.governance import registration, registry
from hospital_mlops.governance.config import load_governance
from hospital_mlops.model.train import train_risk_model
from hospital_mlops.use_case import TrainingConfig, load_use_case
from serving.predictor import RiskPredictor
from tests.fault_proxy import FaultProxy
from tests.unit.test_registry import _features

pytestmark = pytest.mark.postgres

ROLES = list(load_governance().required_signoffs)
FAULTED = "champion-under-faults"  # registered and promoted once, through the fault proxy


@dataclasses.dataclass(frozen=True)
class Servable:
    candidate: registration.Candidate
    sha256: str


@pytest.fixture(scope="module")
def servable(tmp_path_factory: pytest.TempPathFactory) -> Servable:
    """A small XGBoost model with what a servable version carries: its sha256 and feature set
    version as tags, a training record with the thresholds, 200 golden rows."""
    fs = feature_set_for("diabetes130")
    model = train_risk_model(
        _features(3000, 1), _features(1000, 2), fs, TrainingConfig(max_rounds=30)
    )
    work = tmp_path_factory.mktemp("servable")
    digest = model.save(work / "risk_model")
    names = [f.name for f in fs.features]
    golden = _features(200, 3)[names]
    golden["expected_risk"] = model.predict_risk(golden, fs)
    training = work / "training.json"
    training.write_text(json.dumps({"thresholds": {load_use_case().thresholds.primary: 0.2}}))
    candidate = registration.Candidate(
        model_dir=work / "risk_model",
        evidence={"training.json": training},
        params={"source": "diabetes130"},
        metrics={"auroc": 0.66},
        tags={"lineage.model_sha256": digest, "feature_set_version": fs.version},
        gates_passed=True,
        input_example=golden[names].head(3),
        golden=golden,
    )
    return Servable(candidate, digest)


def _use(mp: pytest.MonkeyPatch, uri: str, state: Path) -> None:
    """The registry at ``uri``, and a local state directory of its own that must stay empty."""
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("HMLOPS_STATE_DIR", str(state))
    for name in registry.HTTP_DEFAULTS:  # unset, as where no operator set them: the defaults
        mp.delenv(name, raising=False)


@pytest.fixture(scope="module")
def proxy(
    mlflow_server: LocalMlflow, servable: Servable, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultProxy]:
    """The fault proxy in front of the server, with FAULTED registered, signed off and promoted
    through it (version 1 is its champion)."""
    proxy = FaultProxy(mlflow_server.url).start()
    try:
        with pytest.MonkeyPatch.context() as mp:
            _use(mp, proxy.url, tmp_path_factory.mktemp("state"))
            version = registration.log_candidate(FAULTED, servable.candidate)["version"]
            for role in ROLES:
                registration.sign_off(FAULTED, version, role, f"Test {role} reviewer")
            registration.promote(FAULTED, version, "champion", ROLES)
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture
def through_proxy(
    proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[FaultProxy]:
    _use(monkeypatch, proxy.url, tmp_path / "state")
    proxy.failed.clear()
    try:
        yield proxy
    finally:
        proxy.heal()


def _cli(*argv: str) -> tuple[int, str, str]:
    return run_captured(["registry", *argv])


def _database_rows(server: LocalMlflow, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Rows of the server's own PostgreSQL database, read directly (what a restarted server
    would serve)."""
    engine = sa.create_engine(server.backend_store_uri)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def _versions_in_database(server: LocalMlflow, model: str) -> list[int]:
    rows = _database_rows(
        server, "SELECT version FROM model_versions WHERE name = :m ORDER BY version", m=model
    )
    return [int(v) for (v,) in rows]


def _champion_in_database(server: LocalMlflow, model: str) -> list[int]:
    rows = _database_rows(
        server,
        "SELECT version FROM registered_model_aliases WHERE name = :m AND alias = 'champion'",
        m=model,
    )
    return [int(v) for (v,) in rows]


def test_a_version_is_registered_signed_off_promoted_and_served_through_the_server(
    servable: Servable, mlflow_server: LocalMlflow, monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    state = tmp_path / "state"
    _use(monkeypatch, mlflow_server.url, state)
    name = "served-through-the-server"
    accepted = registration.log_candidate(name, servable.candidate)
    assert accepted["version"] == 1

    code, _, err = _cli("promote", "--model", name, "--version", "1")
    assert code == 1 and "missing: clinical sign-off" in err
    for role in ROLES:
        code, out, err = _cli("sign-off", "--model", name, "--version", "1", "--role", role,
                              "--by", f"Dr {role}")  # fmt: skip
        assert (code, err) == (0, "") and f"{role} sign-off by Dr {role}" in out
    code, out, err = _cli("promote", "--model", name, "--version", "1")
    assert (code, err) == (0, "") and "is now @champion" in out
    code, out, _ = _cli("show", "--model", name, "--json")
    (shown,) = json.loads(out)["versions"]
    assert shown["aliases"] == ["champion"] and set(shown["signoffs"]) == set(ROLES)

    # PostgreSQL is the store, and the artifacts are the server's: the client got
    # mlflow-artifacts: URIs, never a path of its own
    assert _versions_in_database(mlflow_server, name) == [1]
    assert _champion_in_database(mlflow_server, name) == [1]
    uri = registry.client().get_run(accepted["run_id"]).info.artifact_uri
    assert uri.startswith("mlflow-artifacts:")
    stored = mlflow_server.root / "artifacts" / urllib.parse.urlsplit(uri).path.lstrip("/")
    assert (stored / "golden" / "golden.parquet").is_file()
    assert (stored / "evidence" / "training.json").read_bytes() == (
        servable.candidate.evidence["training.json"].read_bytes()
    )

    # the predictor loads the champion by alias as serving/ does on a cluster: the files'
    # sha256 against the registry's record, then the golden predictions
    predictor = RiskPredictor(
        "readmission", name, "champion", prediction_log_url=f"sqlite:///{tmp_path / 'log.db'}"
    )
    try:
        assert predictor.load(), predictor.not_ready_reason
        assert predictor.version == 1 and predictor.served.sha256 == servable.sha256
        assert predictor.threshold == 0.2
    finally:
        if predictor.ready:
            predictor.prediction_log.close()
    code, out, err = _cli("verify", "--model", name)
    assert code == 0 and "reproduces its 200 golden predictions" in out
    assert "Downloading artifacts" not in err  # no progress bars over the one line
    assert not state.exists() or not any(state.iterdir()), "a local store was written"


# every registry command that reads or writes a version, FAULTED's version 1 being the champion
COMMANDS = [
    f"show --model {FAULTED}",
    f"sign-off --model {FAULTED} --version 1 --role clinical --by Late",
    f"promote --model {FAULTED} --version 1 --alias challenger",
    f"retire --model {FAULTED} --version 1 --by Late --reason test --withdraw",
    f"verify --model {FAULTED}",
    f"export --model {FAULTED}@champion --out {{tmp}}/bundle",
]


@pytest.mark.parametrize(
    ("mode", "cause"),
    [("status", "HTTP 503"), ("drop", "the connection closed before an answer")],
    ids=["answering-503", "dropping-connections"],
)
def test_a_server_failing_after_it_answered_is_one_clear_line_from_every_command(
    through_proxy: FaultProxy, mlflow_server: LocalMlflow, tmp_path: Path, mode, cause
) -> None:
    """The server answers the registry's first request, then fails every request about
    models (an ingress answering 503 while the server restarts; the server gone): each
    command says so in one line naming the server, never "no such version", and changes
    nothing."""
    proxy = through_proxy
    for command in COMMANDS:
        proxy.fail(mode, on="model")  # registered-models, model-versions, models/ artifacts
        before = len(proxy.failed)
        code, out, err = _cli(*command.format(tmp=tmp_path).split())
        assert len(proxy.failed) > before, f"{command} never reached the fault"
        assert code == 2 and out == "", (command, out, err)
        assert err == f"hmlops: error: the MLflow store at {proxy.url} failed: {cause}\n", command
    predictor = RiskPredictor("readmission", FAULTED, "champion")
    assert not predictor.load()  # the pod stays unready, its log saying why
    assert predictor.not_ready_reason == (
        f"RegistryUnavailable: the MLflow store at {proxy.url} failed: {cause}"
    )
    proxy.heal()
    version = registry.client().get_model_version(FAULTED, "1")
    assert "signoff.clinical" in version.tags and "Late" not in version.tags["signoff.clinical"]
    assert registry.RETIRED_TAG not in version.tags
    assert _champion_in_database(mlflow_server, FAULTED) == [1]
    aliases = registry.client().get_registered_model(FAULTED).aliases
    assert "challenger" not in aliases and not (tmp_path / "bundle").exists()


def test_a_promotion_whose_alias_write_fails_moves_no_alias(through_proxy: FaultProxy) -> None:
    through_proxy.fail("status", on="registered-models/alias", status=500)
    code, _, err = _cli("promote", "--model", FAULTED, "--version", "1", "--alias", "challenger")
    assert code == 2 and err.endswith("failed: HTTP 500\n") and err.count("\n") == 1
    through_proxy.heal()
    assert "challenger" not in registry.client().get_registered_model(FAULTED).aliases


@pytest.mark.parametrize(
    ("mode", "once", "cause", "left"),
    [
        # the server gone as the version is created: nothing can be checked
        (
            "drop",
            False,
            "the connection closed before an answer",
            "whether a version was registered could not be checked",
        ),
        # an ingress 503 for that one request: the registry, asked again, says none was made
        ("status", True, "HTTP 503", "no version was registered"),
        # the server created the version and its answer was lost
        (
            "lose",
            True,
            "the connection closed before an answer",
            "was created but not completed (retire it)",
        ),
    ],
    ids=["server-gone", "answering-503", "answer-lost"],
)
def test_a_server_failing_during_registration_says_what_was_written_and_moves_no_alias(
    through_proxy: FaultProxy, mlflow_server: LocalMlflow, servable: Servable, mode, once, cause,
    left,
) -> None:  # fmt: skip
    before = _versions_in_database(mlflow_server, FAULTED)
    through_proxy.fail(mode, on="model-versions/create", once=once, onwards=not once)
    started = time.monotonic()
    with pytest.raises(registration.RegistrationFailed) as err:
        registration.log_candidate(FAULTED, servable.candidate)
    assert time.monotonic() - started < 30
    message = str(err.value)
    assert message.startswith(
        f"the MLflow store at {through_proxy.url} failed during registration ({cause}); the run "
    )
    assert left in message and "and no alias changed" in message
    through_proxy.heal()
    after = _versions_in_database(mlflow_server, FAULTED)
    assert _champion_in_database(mlflow_server, FAULTED) == [1]
    if mode == "lose":
        (orphan,) = set(after) - set(before)
        assert f"version {orphan} was created" in message
        assert "run_id" not in registry.client().get_model_version(FAULTED, str(orphan)).tags
    else:
        assert after == before
    if mode == "drop":  # the advice holds: once the server answers, the step runs again
        again = registration.log_candidate(FAULTED, servable.candidate)
        assert again["version"] == max(before) + 1
        assert _champion_in_database(mlflow_server, FAULTED) == [1]


def test_retries_would_register_a_version_twice_when_its_answer_is_lost(
    through_proxy: FaultProxy,
    mlflow_server: LocalMlflow,
    servable: Servable,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why the registry's default is no retries: MLflow retries POSTs too, so the request that
    created a version, its answer lost, creates another."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    before = _versions_in_database(mlflow_server, FAULTED)
    through_proxy.fail("lose", on="model-versions/create", once=True)
    registered = registration.log_candidate(FAULTED, servable.candidate)["version"]
    new = sorted(set(_versions_in_database(mlflow_server, FAULTED)) - set(before))
    assert len(new) == 2 and registered == new[1]
    assert "run_id" not in registry.client().get_model_version(FAULTED, str(new[0])).tags


def test_an_unreachable_server_is_one_line_in_seconds_from_the_cli(tmp_path: Path) -> None:
    """MLflow alone would retry for minutes (7 retries, exponential back-off); the registry's
    bounds apply when the operator set none."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens: connections are refused
    env = {k: v for k, v in os.environ.items() if k not in registry.HTTP_DEFAULTS}
    env.update(MLFLOW_TRACKING_URI=uri, HMLOPS_STATE_DIR=str(tmp_path))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "hospital_mlops.cli", "registry", "show", "--model", "any"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"hmlops: error: the MLflow store at {uri} cannot be reached: connection refused\n"
    )
    assert elapsed < 30, f"{elapsed:.0f} s to fail (the interpreter's start included)"


def test_the_operators_retries_and_timeout_are_kept(
    through_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    through_proxy.fail("status", status=503)
    with pytest.raises(registry.RegistryUnavailable, match=r"cannot be reached: HTTP 503$"):
        registry.client()
    assert len(through_proxy.failed) == 1  # the registry's default: no retries
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]
        == registry.HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_TIMEOUT"]
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "0")
    with pytest.raises(registry.RegistryUnavailable, match=r"HTTP 503$"):
        registry.client()
    assert len(through_proxy.failed) == 1 + 3  # the operator's: two retries

    # a server that accepts connections and never answers: the operator's timeout
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # never accepted: the kernel completes the connection, nothing answers
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        started = time.monotonic()
        with pytest.raises(registry.RegistryUnavailable) as err:
            registry.client()
        elapsed = time.monotonic() - started
    assert str(err.value).endswith("no answer within 2 s (MLFLOW_HTTP_REQUEST_TIMEOUT)")
    assert 1.5 < elapsed < 10


def test_a_failing_server_is_never_taken_for_a_missing_champion_or_missing_evidence(
    through_proxy: FaultProxy, mlflow_server: LocalMlflow
) -> None:
    """What the rollout and monitoring read as "not there" (no champion yet, no evidence
    recorded) they read only from a refusal: a 503 is the store failing. Taken for "no
    champion", a rollout's restore step would delete the champion alias."""
    from hospital_mlops.drift.reference import DriftReferenceError
    from hospital_mlops.drift.store import reference_from_registry
    from hospital_mlops.monitoring.run import MonitoringError, baseline_from_registry
    from hospital_mlops.rollout.commands import _registered

    proxy = through_proxy
    assert registry.champion_version(FAULTED) == "1"
    assert registry.champion_version("no-such-model") is None
    with pytest.raises(MonitoringError, match="lacks its evaluation evidence"):
        baseline_from_registry(FAULTED, "champion")  # healthy: this version has none
    with pytest.raises(DriftReferenceError, match="has no evidence/drift_reference"):
        reference_from_registry(FAULTED, "champion")
    unavailable = f"the MLflow store at {proxy.url} failed: HTTP 503"
    proxy.fail("status", on="alias")
    with pytest.raises(registry.RegistryUnavailable, match=unavailable):
        registry.champion_version(FAULTED)
    with pytest.raises(registry.RegistryUnavailable, match=unavailable):
        _registered(FAULTED, 1)
    proxy.fail("status", on="artifacts")
    with pytest.raises(registry.RegistryUnavailable, match=unavailable):
        baseline_from_registry(FAULTED, "1")
    with pytest.raises(registry.RegistryUnavailable, match=unavailable):
        reference_from_registry(FAULTED, "1")
    proxy.heal()
    assert _champion_in_database(mlflow_server, FAULTED) == [1]
