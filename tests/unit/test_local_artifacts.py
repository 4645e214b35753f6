"""The local registry moved or mounted elsewhere, and read by a reader that may not write it."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from hospital_mlops.governance.local_artifacts import relocated


def test_a_location_under_a_state_directory_that_is_gone_is_read_under_the_current_one(
    tmp_path: Path,
) -> None:
    state = tmp_path / "mounted"
    (state / "mlartifacts").mkdir(parents=True)
    recorded = "/gone/state/mlartifacts/models/m-1/artifacts"
    assert relocated(recorded, state) == str(state / "mlartifacts/models/m-1/artifacts")


def test_a_location_that_still_exists_or_is_no_registry_path_is_left_alone(tmp_path: Path) -> None:
    state, other = tmp_path / "state", tmp_path / "other"
    (state / "mlartifacts").mkdir(parents=True)
    (other / "mlartifacts").mkdir(parents=True)
    still_there = str(other / "mlartifacts" / "run" / "artifacts")
    assert relocated(still_there, state) == still_there  # another live store: never redirected
    assert relocated("/data/models/x", state) == "/data/models/x"
    assert relocated("/gone/mlartifacts/x", tmp_path / "empty") == "/gone/mlartifacts/x"


def _forget_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset MLFLOW_TRACKING_URI so that the end of the test restores it. ``delenv`` records
    nothing for a variable that is not set, and mlflow sets it during the test: without the
    ``setenv`` first, the test's store would leak into every later test of the process."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset-by-the-test")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


def test_a_registered_model_loads_from_a_moved_read_only_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry_state: Path
) -> None:
    """Register a small model, move the whole state directory, make it read-only, and load it
    from there: the artifacts are found, and the load writes nothing into the store."""
    import mlflow

    from hospital_mlops.governance import registry

    original = tmp_path / "written-here"
    monkeypatch.setenv("HMLOPS_STATE_DIR", str(original))
    _forget_tracking_uri(monkeypatch)
    experiment = registry.experiment_for(registry.client(), "local-artifacts-probe")
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_dict({"hello": "registry"}, "probe/probe.json")
    run_id = run.info.run_id
    moved = tmp_path / "mounted-elsewhere"
    shutil.move(original, moved)
    for path in [moved, *moved.rglob("*")]:
        mode = path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        os.chmod(path, mode)
    try:
        monkeypatch.setenv("HMLOPS_STATE_DIR", str(moved))
        _forget_tracking_uri(monkeypatch)  # set by mlflow itself
        registry.client()
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="probe")
        assert (Path(local) / "probe.json").read_text().strip() == '{\n  "hello": "registry"\n}'
        assert not Path(local).is_relative_to(moved)  # a copy, not the store's own file
        assert not original.exists()
    finally:
        for path in [moved, *moved.rglob("*")]:
            os.chmod(path, path.stat().st_mode | stat.S_IWUSR)


def test_a_read_only_state_directory_sends_local_logs_to_the_temporary_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hospital_mlops import paths
    from hospital_mlops.inference.prediction_log import default_url

    state = tmp_path / "mounted-read-only"
    state.mkdir()
    monkeypatch.setenv("HMLOPS_STATE_DIR", str(state))
    monkeypatch.delenv("HMLOPS_PREDICTION_LOG_URL", raising=False)
    monkeypatch.setattr(paths.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    real_access = os.access
    monkeypatch.setattr(
        paths.os, "access", lambda p, mode: Path(p) != state and real_access(p, mode)
    )
    assert default_url() == f"sqlite:///{tmp_path / 'tmp' / 'hmlops-state' / 'predictions.sqlite'}"
    assert not list(state.iterdir())
    said = capsys.readouterr().err
    assert (
        f"the state directory {state} is read-only" in said and "HMLOPS_PREDICTION_LOG_URL" in said
    )
    default_url()
    assert capsys.readouterr().err == ""  # said once
    monkeypatch.setattr(paths.os, "access", real_access)
    assert default_url() == f"sqlite:///{state / 'predictions.sqlite'}"  # writable: the state dir
