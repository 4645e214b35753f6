"""The stores the suite runs on: SQLite (the laptop) and PostgreSQL (the cluster), side by side.

A test that touches the prediction log, drift results, feedback, outcomes, rollout observation or
monitoring takes ``store_url`` (or ``new_store_url`` for several databases) and runs once per
backend. A registry test takes ``mlflow_server``: the registry as a cluster runs it, an
``mlflow server`` on the session's PostgreSQL. The PostgreSQL runs carry the ``postgres`` mark:
`make test` leaves them to `make test-cluster`, which starts one server per test session (per
xdist worker) from Debian's ``postgresql`` package. Outside CI a machine without it skips them
with the reason; under CI (``CI`` set) that is a failure, never a skip.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from e2e.local_mlflow import LocalMlflow, running_mlflow
from e2e.local_postgres import LocalPostgres, PostgresUnavailable

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    root = tmp_path_factory.mktemp("postgres")
    try:
        server = LocalPostgres(root).start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mlflow_server(
    postgres: LocalPostgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalMlflow]:
    """A real ``mlflow server`` with a database of its own on ``postgres`` as its backend store
    and artifacts proxied to a local directory; started once per session (it takes ~11 s)."""
    with running_mlflow(postgres, tmp_path_factory.mktemp("mlflow-server")) as server:
        yield server


class StoreFactory:
    """New, empty databases of one backend."""

    def __init__(self, backend: str, directory: Path, request: pytest.FixtureRequest) -> None:
        self.backend = backend
        self.directory = directory
        self._request = request

    @property
    def server(self) -> LocalPostgres:
        return self._request.getfixturevalue("postgres")

    def __call__(self, name: str = "log") -> str:
        if self.backend == "sqlite":
            path = self.directory / f"{name}.sqlite"
            path.parent.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{path}"
        return self.server.create_database(name.replace("-", "_"))

    def read_only(self, url: str) -> str:
        """The same database, refusing every write from now on (the tables stay)."""
        if url.startswith("sqlite:///"):
            return f"sqlite:///file:{url.removeprefix('sqlite:///')}?mode=ro&uri=true"
        self.server.make_read_only(url)
        return url

    def remove(self, url: str) -> None:
        """The database is gone under its users (a dropped database, an unopenable file)."""
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.unlink()
            path.mkdir()  # a directory where the file was: unopenable
            return
        self.server.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def new_store_url(
    store_backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> StoreFactory:
    return StoreFactory(store_backend, tmp_path / "stores", request)


@pytest.fixture
def store_url(new_store_url: StoreFactory) -> str:
    return new_store_url("log")


@pytest.fixture(scope="module", params=BACKENDS)
def module_store_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def module_new_store_url(
    module_store_backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> StoreFactory:
    return StoreFactory(module_store_backend, tmp_path_factory.mktemp("stores"), request)


NewStoreUrl = Callable[[str], str]


def simultaneously(count: int, call: Callable[[], object]) -> list[object]:
    """``call`` in ``count`` threads released at the same moment: each one's result, or the
    exception it raised (returned, not raised in a thread where nobody would see it)."""
    barrier = threading.Barrier(count)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(call())
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results
