"""Emit KServe inference-logger CloudEvents from a local predictor.

On a cluster the KServe agent sidecar posts every request and response to the logger URL; a
laptop has no agent, so the predictor posts the same binary-mode events itself, from a
background thread so a slow or absent detector never delays an answer. Events that cannot be
delivered are counted and logged (without their bodies), never retried forever.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

import httpx

from hospital_mlops.drift.inference_events import binary_headers
from hospital_mlops.security.api_access import client_headers

log = logging.getLogger("hospital_mlops.serving.events")
MAX_PENDING = 10_000


class EventEmitter:
    def __init__(self, url: str, inference_service: str, timeout: float = 2.0) -> None:
        self.url = url
        self.inference_service = inference_service
        self.timeout = timeout
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any], dict[str, Any]] | None] = queue.Queue(
            MAX_PENDING
        )
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def emit(self, event_id: str, request: dict[str, Any], response: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((event_id, request, response))
        except queue.Full:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("inference-logger queue full; %d events dropped", self.dropped)

    def _post(self, client: httpx.Client, event_id: str, kind: Any, body: dict[str, Any]) -> None:
        headers = {**binary_headers(event_id, kind, self.inference_service), **client_headers()}
        content = json.dumps(body, separators=(",", ":")).encode()
        try:
            answer = client.post(self.url, content=content, headers=headers)
            if answer.status_code >= 300:
                self.failed += 1
                log.warning("logger sink answered %d for a %s event", answer.status_code, kind)
            else:
                self.sent += 1
        except httpx.HTTPError as exc:
            self.failed += 1
            if self.failed % 100 == 1:
                log.warning("logger sink %s unreachable: %s", self.url, type(exc).__name__)

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout) as client:
            while True:
                item = self._queue.get()
                try:
                    if item is None:
                        return
                    event_id, request, response = item
                    self._post(client, event_id, "request", request)
                    self._post(client, event_id, "response", response)
                finally:
                    self._queue.task_done()

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)
