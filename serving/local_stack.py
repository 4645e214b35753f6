"""The three local servers (predictor, explainer, drift detector) as one start/stop unit.

Each runs in its own process as a real ``kserve.ModelServer`` on 127.0.0.1, wired the way
KServe wires them on a cluster: the explainer calls the predictor through ``predictor_host``,
and the predictor's inference-logger events go to the detector. ``hmlops serve``, the demo
and the integration tests all start the stack through this class.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from hospital_mlops.paths import state_dir

PREDICTOR_MODEL = "readmission"
COMPONENTS = ("predictor", "explainer", "detector")


class StackFailed(RuntimeError):
    """A component exited or never became ready; carries the tail of its log."""


@dataclass(frozen=True)
class Component:
    name: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ready_url(self) -> str:
        return f"{self.base_url}/v2/health/ready"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalStack:
    def __init__(
        self,
        model: str,
        port_base: int,
        log_dir: Path | None = None,
        *,
        detector_window: int | None = None,
        served_name: str = PREDICTOR_MODEL,
    ) -> None:
        """``served_name``: the name the predictor serves under (its use case's)."""
        self.model = model
        self.served_name = served_name
        self.detector_window = detector_window
        self.components = {
            name: Component(name, port_base + offset) for offset, name in enumerate(COMPONENTS)
        }
        self.log_dir = log_dir or state_dir() / "serve-logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def predictor(self) -> Component:
        return self.components["predictor"]

    @property
    def explainer(self) -> Component:
        return self.components["explainer"]

    @property
    def detector(self) -> Component:
        return self.components["detector"]

    def urls(self) -> dict[str, str]:
        p, e, d = self.predictor, self.explainer, self.detector
        return {
            "predictor (v1)": f"{p.base_url}/v1/models/{self.served_name}:predict",
            "predictor (v2)": f"{p.base_url}/v2/models/{self.served_name}/infer",
            "explainer": f"{e.base_url}/v1/models/{self.served_name}:explain",
            "drift (latest)": f"{d.base_url}/drift/latest",
            "drift (metrics)": f"{d.base_url}/metrics",
        }

    def _argv(self, name: str) -> list[str]:
        port = str(self.components[name].port)
        base = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", name, "--port", port]
        if name == "predictor":
            return [*base, "--model", self.model, "--logger-url", self.detector.base_url + "/"]
        if name == "explainer":
            predictor = ["--predictor-host", f"127.0.0.1:{self.predictor.port}"]
            return [*base, *predictor, "--model_name", self.served_name]
        window = [] if self.detector_window is None else ["--window", str(self.detector_window)]
        return [*base, "--model", self.model, *window]

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, timeout: float = 240.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        # The detector first: the predictor's first events must find it listening.
        for name in ("detector", "predictor", "explainer"):
            with self.log_path(name).open("wb") as log:
                self.processes[name] = subprocess.Popen(
                    self._argv(name), stdout=log, stderr=subprocess.STDOUT, env=env
                )
        deadline = time.monotonic() + timeout
        pending = set(COMPONENTS)
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for name in sorted(pending):
                    process = self.processes[name]
                    if process.poll() is not None:
                        self.stop()
                        raise StackFailed(
                            f"the {name} exited with code {process.returncode}:\n"
                            + _tail(self.log_path(name))
                        )
                    try:
                        if client.get(self.components[name].ready_url).status_code == 200:
                            pending.discard(name)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    self.stop()
                    raise StackFailed(f"not ready after {timeout:.0f} s: {sorted(pending)}")
                if pending:
                    time.sleep(0.3)

    def stop(self, grace: float = 15.0) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            try:
                process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()

    def wait(self) -> int:
        """Block until a component exits (or Ctrl-C); returns the first non-zero exit code."""
        while True:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    print(f"the {name} stopped (exit {process.returncode})", file=sys.stderr)
                    return process.returncode or 1
            time.sleep(0.5)

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
