"""A real ``mlflow server`` for the tests and the end-to-end harness: the registry as it runs on a
cluster, with PostgreSQL as its backend store and a local directory as the artifact destination
(artifacts proxied through the server, so clients never touch the directory: ``mlflow-artifacts:``
URIs, as with an object store behind it).

Nothing here is part of the product; it stands in for the hospital's MLflow deployment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from e2e.local_postgres import LocalPostgres, free_port


@dataclass
class LocalMlflow:
    backend_store_uri: str
    root: Path
    host: str = "127.0.0.1"
    port: int = 0
    workers: int = 2
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_file(self) -> Path:
        return self.root / "mlflow-server.log"

    def start(self, timeout: float = 120) -> LocalMlflow:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port(self.host)
        artifacts = self.root / "artifacts"
        artifacts.mkdir(exist_ok=True)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", DO_NOT_TRACK="1")
        env.pop("MLFLOW_TRACKING_URI", None)
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--backend-store-uri",
                    self.backend_store_uri,
                    "--serve-artifacts",
                    "--artifacts-destination",
                    str(artifacts),
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    "--workers",
                    str(self.workers),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,  # stop() ends its workers with it
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({self._process.returncode}): "
                    f"{self.log_file.read_text()[-3000:]}"
                )
            with (
                contextlib.suppress(urllib.error.URLError, OSError),
                urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer,
            ):
                if answer.status == 200:
                    return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy within {timeout:.0f} s")

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()


@contextlib.contextmanager
def running_mlflow(
    postgres: LocalPostgres, root: Path, host: str = "127.0.0.1"
) -> Iterator[LocalMlflow]:
    """A server on a new database of ``postgres``."""
    server = LocalMlflow(postgres.create_database("mlflow"), root, host=host).start()
    try:
        yield server
    finally:
        server.stop()
