"""The drift detector as a real KServe ModelServer on 127.0.0.1: binary CloudEvents on ``POST /``
and on ``/v1/models/<name>:predict``, ``/drift/latest``, ``/metrics``, the result sink, field-named
4xx answers, and the latest result after a restart."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from hospital_mlops.drift.inference_events import binary_headers
from tests.unit.test_drift import FS, REFERENCE_ROWS, Population, population, reference_file

REPO = Path(__file__).resolve().parents[2]
WINDOW = 60
PER_EVENT = 20  # three request/response pairs fill a window
NAME = "readmission-drift"
START_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Sink:
    """A CloudEvent sink on 127.0.0.1 that records what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append((dict(self.headers.items()), json.loads(body)))
                self.send_response(202)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Detector:
    def __init__(self, reference: Path, store_url: str, sink: str, log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        code = (
            "from serving.detector import serve_detector; "
            f"serve_detector('readmission-30d', 'champion', {self.port}, sink={sink!r}, "
            f"reference_path={str(reference)!r}, window={WINDOW}, store_url={store_url!r})"
        )
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"detector exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.base}/v2/health/ready", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise AssertionError(f"detector not ready in {START_TIMEOUT}s:\n{log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def latest(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.base}/drift/latest", timeout=5)
        assert answer.status_code == 200
        return dict(answer.json())

    def metrics(self) -> str:
        return httpx.get(f"{self.base}/metrics", timeout=5).text


@pytest.fixture(scope="module")
def pop(d130_small: Path) -> Population:
    return population(d130_small)


@pytest.fixture(scope="module")
def setup(
    pop: Population, tmp_path_factory: pytest.TempPathFactory, module_new_store_url
) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("detector")
    return {
        "reference": reference_file(pop, work),
        "store_url": module_new_store_url("drift"),
        "sink": Sink(),
        "log": work / "detector.log",
    }


@pytest.fixture(scope="module")
def detector(setup: dict[str, Any]) -> Iterator[Detector]:
    server = Detector(setup["reference"], setup["store_url"], setup["sink"].url, setup["log"])
    yield server
    server.stop()


def _pair(pop: Population, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    start = REFERENCE_ROWS + n * PER_EVENT
    instances = pop.instances[start : start + PER_EVENT]
    features = pop.features.iloc[start : start + PER_EVENT]
    risk = pop.model.predict_risk(features, FS)
    return {"instances": instances}, {"predictions": [{"risk": float(r)} for r in risk]}


def _fields(answer: httpx.Response) -> list[str]:
    """The field names of a 4xx answer (``{"error": "{\"errors\": [{field, message}]}"}``)."""
    return [e["field"] for e in json.loads(answer.json()["error"])["errors"]]


def _post(url: str, event_id: str, kind: str, body: Any) -> httpx.Response:
    headers = binary_headers(event_id, kind, "readmission")  # type: ignore[arg-type]
    return httpx.post(url, content=json.dumps(body).encode(), headers=headers, timeout=10)


def test_logged_events_fill_a_window_that_is_tested_stored_exposed_and_emitted(
    pop: Population, detector: Detector, setup: dict[str, Any]
) -> None:
    before = detector.latest()
    assert before["status"] == "collecting" and before["buffered_rows"] == 0
    assert before["window"] == WINDOW and before["backend"] in ("alibi-detect", "scipy")

    root, predict = f"{detector.base}/", f"{detector.base}/v1/models/{NAME}:predict"
    request, response = _pair(pop, 0)
    # the Knative Trigger / KServe logger path: the service root
    assert _post(root, "e0", "response", response).status_code == 202  # either order
    answer = _post(root, "e0", "request", request)
    assert answer.status_code == 202 and answer.json()["buffered_rows"] == PER_EVENT

    # KServe's own path: the dataplane unwraps the binary CloudEvent and answers with one
    request, response = _pair(pop, 1)
    assert _post(predict, "e1", "request", request).status_code == 200
    answer = _post(predict, "e1", "response", response)
    assert answer.status_code == 200
    assert answer.headers["ce-type"] and answer.headers["ce-specversion"] == "1.0"
    assert answer.json()["buffered_rows"] == 2 * PER_EVENT
    assert detector.latest()["status"] == "collecting"

    request, response = _pair(pop, 2)
    _post(root, "e2", "request", request)
    _post(root, "e2", "response", response)
    deadline = time.monotonic() + 30
    latest = detector.latest()
    while latest["status"] != "tested" and time.monotonic() < deadline:
        time.sleep(0.2)
        latest = detector.latest()
    assert latest["status"] == "tested", latest
    assert latest["window_size"] == WINDOW and latest["buffered_rows"] == 0
    assert len(latest["feature_p_values"]) == 22
    assert all(0 <= p <= 1 for p in latest["feature_p_values"].values())
    assert 0 <= latest["score_p_value"] <= 1 and isinstance(latest["is_drift"], bool)
    assert latest["model_version"] == "readmission-30d@champion"
    assert latest["events_received"] == {"request": 3, "response": 3}

    metrics = detector.metrics()
    assert "hmlops_drift_windows_tested_total 1.0" in metrics
    assert 'hmlops_drift_events_received_total{kind="request"} 3.0' in metrics
    assert 'hmlops_drift_feature_p_value{feature="inpatient_admissions_prior_year"}' in metrics
    assert "hmlops_drift_score_p_value" in metrics and "hmlops_drift_is_drift" in metrics

    deadline = time.monotonic() + 10
    while not setup["sink"].received and time.monotonic() < deadline:
        time.sleep(0.1)
    headers, body = setup["sink"].received[0]
    assert headers["ce-type"] == "org.hospital-mlops.drift.result"
    assert headers["ce-id"] == body["window_id"] == latest["window_id"]
    assert body["feature_p_values"] == latest["feature_p_values"]


@pytest.mark.parametrize(
    ("drop", "change", "content", "field"),
    [
        ("ce-specversion", {}, b"{}", "ce-specversion"),
        (None, {"ce-type": "com.example.other"}, b"{}", "ce-type"),
        (None, {"content-type": "text/plain"}, b"{}", "content-type"),
        (None, {}, b"{not json", "body"),
        ("ce-id", {}, b"{}", "ce-id"),
    ],
)
def test_invalid_cloudevents_get_a_400_naming_the_field(
    detector: Detector, drop: str | None, change: dict[str, str], content: bytes, field: str
) -> None:
    headers = {**binary_headers("bad", "request", "readmission"), **change}
    if drop:
        headers.pop(drop)
    answer = httpx.post(f"{detector.base}/", content=content, headers=headers, timeout=5)
    assert answer.status_code == 400 and _fields(answer) == [field]


def test_predict_path_refusals_are_4xx_and_invalid_requests_are_counted(
    pop: Population, detector: Detector
) -> None:
    # an invalid event of its own (the test must not lean on another test's, which another
    # worker may have run)
    headers = binary_headers("bad", "request", "readmission")
    headers.pop("ce-specversion")
    assert httpx.post(f"{detector.base}/", content=b"{}", headers=headers).status_code == 400
    predict = f"{detector.base}/v1/models/{NAME}:predict"
    headers = binary_headers("bad", "request", "readmission")
    headers.pop("ce-type")  # no longer a CloudEvent to KServe: our parser names the field
    answer = httpx.post(predict, content=b'{"instances": []}', headers=headers, timeout=5)
    assert answer.status_code == 400 and _fields(answer) == ["ce-type"]
    answer = httpx.post(
        predict, content=b"{not json", headers=binary_headers("x", "request", "r"), timeout=5
    )
    assert answer.status_code == 400 and _fields(answer) == ["body"]
    too_big = b'{"instances": "' + b"x" * 2_100_000 + b'"}'
    answer = httpx.post(
        f"{detector.base}/", content=too_big, headers=binary_headers("x", "request", "r")
    )
    assert answer.status_code == 413 and _fields(answer) == ["body"]

    # A well-formed event carrying a request the predictor refused: accepted, counted, not used.
    instance = {**pop.instances[REFERENCE_ROWS], "age": "[200-210)"}
    answer = _post(f"{detector.base}/", "refused", "request", {"instances": [instance]})
    assert answer.status_code == 202
    metrics = detector.metrics()
    assert 'hmlops_drift_events_invalid_total{field="age",reason="invalid_request"} 1.0' in metrics
    assert 'field="ce-specversion",reason="invalid_event"' in metrics
    assert "[200-210)" not in metrics


def test_the_latest_result_is_served_after_a_restart(
    pop: Population, detector: Detector, setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server process ends; a new detector (here in-process, with the permissive profile,
    which needs no code change) opens the same store and shows the same latest result."""
    from serving.detector import DriftDetector

    # a tested window of its own when the test that fills one ran on the other worker
    n = 10
    before = detector.latest()
    deadline = time.monotonic() + 60
    while before["status"] != "tested" and time.monotonic() < deadline:
        if before["buffered_rows"] + PER_EVENT <= WINDOW:
            request, response = _pair(pop, n)
            _post(f"{detector.base}/", f"r{n}", "request", request)
            _post(f"{detector.base}/", f"r{n}", "response", response)
            n += 1
        time.sleep(0.2)
        before = detector.latest()
    assert before["status"] == "tested", before
    detector.stop()
    monkeypatch.setenv("HMLOPS_LICENCE_PROFILE", "permissive")
    again = DriftDetector(
        NAME,
        "readmission-30d",
        "champion",
        reference_path=setup["reference"],
        window=WINDOW,
        store_url=setup["store_url"],
    )
    assert again.load(), again.not_ready_reason
    after = again.latest_view()
    assert after["status"] == "tested" and after["buffered_rows"] == 0
    assert after["window_id"] == before["window_id"]
    assert after["feature_p_values"] == before["feature_p_values"]
    assert after["backend"] == "scipy"  # the live backend; the stored result says who tested it


def test_a_detector_without_a_usable_reference_never_reports_ready(tmp_path: Path) -> None:
    from serving.detector import DriftDetector

    missing = DriftDetector(NAME, "m", "1", reference_path=tmp_path / "none.parquet")
    assert not missing.load() and not missing.ready
    assert missing.not_ready_reason.startswith("DriftReferenceError")
    unregistered = DriftDetector(NAME, "no-such-model", "champion")
    assert not unregistered.load() and not unregistered.ready
    assert "no-such-model" in unregistered.not_ready_reason
