"""``hmlops monitor feedback-api``: the real server process on 127.0.0.1, over the prediction log
named by ``HMLOPS_PREDICTION_LOG_URL``; a response posted is the one monitoring reads."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.feedback import responses

SERVED = ServedModel("readmission-30d", 4, "a" * 64, "fs", "b" * 64, "diabetes130")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_served_api_records_what_monitoring_then_reads(tmp_path: Path, store_url: str) -> None:
    url = store_url
    log = PredictionLog(url)
    answer = {"prediction_id": "pred-1", "scored_at": "2026-01-02T10:00:00Z", "risk": 0.4}
    log.write(records("r", "v1", SERVED, [{}], [{**answer, "alert": True}]))
    port = _free_port()
    env = dict(os.environ, HMLOPS_PREDICTION_LOG_URL=url, HMLOPS_STATE_DIR=str(tmp_path))
    argv = [sys.executable, "-m", "hospital_mlops.cli", "monitor", "feedback-api"]
    server = subprocess.Popen(
        [*argv, "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the feedback API never became healthy"
            time.sleep(0.3)
        body = {"prediction_id": "pred-1", "response": "acknowledged"}
        posted = httpx.post(
            f"{base}/v1/feedback", json={**body, "responded_at": "2026-01-02T10:05:00Z"}
        )
        assert posted.status_code == 201, posted.text
        refused = httpx.post(f"{base}/v1/feedback", json={**body, "responded_at": "soon"})
        assert refused.status_code == 400 and "responded_at" in refused.text
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0].decode()
    frame = responses(log, "readmission-30d", 4)
    assert frame["response"].tolist() == ["acknowledged"]
    # a body is never logged: the access log has the path and status only
    assert "acknowledged" not in output and "soon" not in output
    assert "POST /v1/feedback" in output
