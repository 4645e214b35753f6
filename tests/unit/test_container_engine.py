"""What a pipeline step's container gets, and the engine errors, without an engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from hospital_mlops.deploy import container_engine
from hospital_mlops.deploy.container_engine import ContainerEngineError, step_container


def test_a_step_sees_the_store_writable_and_the_extract_read_only(tmp_path: Path) -> None:
    store, extract = tmp_path / "store", tmp_path / "data" / "extract.zip"
    settings = step_container(
        store_root=store,
        extract=extract,
        catalog=None,
        registry_dir=None,
        env={"HMLOPS_HMAC_KEY": "k", "HOME": "/root"},
    )
    assert settings.writable == (store.resolve(),)
    assert settings.read_only == (extract.resolve(),)
    assert settings.environment == {"HMLOPS_HMAC_KEY": "k"}  # nothing else of the host's
    assert settings.network is False
    args = settings.docker_run_args()
    assert args["network_mode"] == "none"
    assert args["read_only"] is True and set(args["tmpfs"]) == {"/tmp"}
    assert args["cap_drop"] == ["ALL"] and args["security_opt"] == ["no-new-privileges"]
    assert [(m["Source"], m["Target"], m["ReadOnly"]) for m in args["mounts"]] == [
        (str(store.resolve()), str(store.resolve()), False),
        (str(extract.resolve()), str(extract.resolve()), True),
    ]


def test_the_image_keeps_its_own_code_version_and_home(tmp_path: Path) -> None:
    env = {
        "HMLOPS_GIT_SHA": "abc",
        "HMLOPS_GIT_DIRTY": "true",
        "HMLOPS_HOME": "/x",
        "HMLOPS_HMAC_KEY": "k",
    }
    settings = step_container(
        store_root=tmp_path, extract=tmp_path / "e", catalog=None, registry_dir=None, env=env
    )
    assert set(settings.environment) == {"HMLOPS_HMAC_KEY"}


def test_a_key_file_and_a_catalog_are_mounted_read_only(tmp_path: Path) -> None:
    key, catalog = tmp_path / "secret" / "key", tmp_path / "cat.yaml"
    settings = step_container(
        store_root=tmp_path / "s",
        extract=tmp_path / "e",
        catalog=catalog,
        registry_dir=None,
        env={"HMLOPS_HMAC_KEY_FILE": str(key)},
    )
    assert settings.environment == {"HMLOPS_HMAC_KEY_FILE": str(key.resolve())}
    assert set(settings.read_only) == {(tmp_path / "e").resolve(), catalog.resolve(), key.resolve()}


def test_the_local_registry_is_mounted_and_a_server_gets_the_network(tmp_path: Path) -> None:
    local = step_container(
        store_root=tmp_path / "s",
        extract=tmp_path / "e",
        catalog=None,
        registry_dir=tmp_path / "state",
        env={},
    )
    assert (tmp_path / "state").resolve() in local.writable and local.network is False
    assert local.environment == {"HMLOPS_STATE_DIR": str((tmp_path / "state").resolve())}
    db = tmp_path / "elsewhere" / "mlflow.db"
    sqlite = step_container(
        store_root=tmp_path / "s",
        extract=tmp_path / "e",
        catalog=None,
        registry_dir=tmp_path / "state",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{db}"},
    )
    assert db.parent.resolve() in sqlite.writable
    server = step_container(
        store_root=tmp_path / "s",
        extract=tmp_path / "e",
        catalog=None,
        registry_dir=tmp_path / "state",
        env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"},
    )
    assert server.network is True and server.docker_run_args()["network_mode"] == "host"
    assert (tmp_path / "state").resolve() not in server.writable


def test_a_path_inside_the_store_is_not_mounted_twice(tmp_path: Path) -> None:
    store = tmp_path / "store"
    settings = step_container(
        store_root=store,
        extract=store / "extracts" / "x",
        catalog=None,
        registry_dir=store / "registry",
        env={},
    )
    assert settings.writable == (store.resolve(),) and settings.read_only == ()


def test_a_docker_host_that_does_not_answer_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with (
        pytest.raises(ContainerEngineError, match=r"none\.sock does not answer the Docker API"),
        container_engine.docker_api(tmp_path),
    ):
        pass


def test_no_engine_at_all_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setattr(container_engine, "_ping", lambda url: None)
    monkeypatch.setattr(container_engine.shutil, "which", lambda name: None)
    with (
        pytest.raises(ContainerEngineError, match="install podman"),
        container_engine.docker_api(tmp_path),
    ):
        pass


def test_the_runner_and_image_must_agree(tmp_path: Path) -> None:
    from pipelines.runner import run_locally

    with pytest.raises(ContainerEngineError, match="needs --image"):
        run_locally(
            source="diabetes130",
            use="readmission_risk_model",
            extract=None,
            scenario=None,
            out=tmp_path,
            runner="container",
        )
    with pytest.raises(ContainerEngineError, match="--image is for --runner container"):
        run_locally(
            source="diabetes130",
            use="readmission_risk_model",
            extract=None,
            scenario=None,
            out=tmp_path,
            image="x:1",
        )
