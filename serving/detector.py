"""The drift detector as a ``kserve.Model``: KServe inference-logger CloudEvents in, drift results
out (``/drift/latest``, Prometheus ``/metrics``, the results store, an optional CloudEvent sink).

Events arrive two ways, both in binary content mode (``ce-*`` headers, JSON body):

* ``POST /v1/models/<name>:predict``: KServe's dataplane sees the four required ``ce-*``
  headers, unwraps the CloudEvent (``DataPlane.decode`` → ``get_binary_cloudevent``) and calls
  ``predict`` with the decoded body and the original headers; the answer goes back as a binary
  CloudEvent.
* ``POST /``: where the KServe agent's logger and a Knative Trigger deliver (the service URL).
  KServe 0.20 has no hook for extra routes, but ``RESTServer`` serves the module-level FastAPI
  ``kserve.model_server.app``; routes added to it before ``ModelServer.start`` are served, and
  ours come first, so ``GET /`` stays KServe's liveness answer.

Window tests run off the event loop, one at a time; intake never waits for a test or the sink.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kserve import Model
from kserve.errors import InvalidInput
from prometheus_client import Counter, Gauge

from hospital_mlops.drift.inference_events import (
    MAX_EVENT_BYTES,
    SPEC_VERSION,
    InferenceEvent,
    InvalidEvent,
    parse_binary_event,
)
from hospital_mlops.drift.monitor import DriftMonitor, ScoredWindow
from hospital_mlops.drift.tester import DriftResult

log = logging.getLogger("hospital_mlops.serving.detector")

DETECTOR_NAME = "readmission-drift"
RESULT_EVENT_TYPE = "org.hospital-mlops.drift.result"
SINK_ENV = "HMLOPS_DRIFT_SINK_URL"
MAX_QUEUED_WINDOWS = 8
MAX_SINK_IN_FLIGHT = 16
SINK_TIMEOUT_SECONDS = 5.0

EVENTS_RECEIVED = Counter(
    "hmlops_drift_events_received", "Inference-logger CloudEvents accepted", ["kind"]
)
EVENTS_INVALID = Counter(
    "hmlops_drift_events_invalid",
    "Events or request/response pairs left out of the windows, by reason and field name",
    ["reason", "field"],
)
OUTSIDE_INTENDED_USE = Gauge(
    "hmlops_drift_rows_outside_intended_use",
    "Scored encounters left out of the windows: outside the intended use (death, hospice)",
)
WINDOWS_TESTED = Counter("hmlops_drift_windows_tested", "Windows tested for drift")
WINDOWS_DROPPED = Counter(
    "hmlops_drift_windows_dropped", "Full windows not tested because tests fell behind"
)
TEST_FAILURES = Counter("hmlops_drift_test_failures", "Window tests that raised an error")
IS_DRIFT = Gauge("hmlops_drift_is_drift", "1 if the latest window drifted, else 0")
FEATURE_P_VALUE = Gauge(
    "hmlops_drift_feature_p_value", "Latest window: p-value per feature", ["feature"]
)
FEATURE_DISTANCE = Gauge(
    "hmlops_drift_feature_distance",
    "Latest window: KS statistic or chi-square statistic per feature",
    ["feature"],
)
WINDOW_ALERTS = Gauge(
    "hmlops_drift_window_alerts",
    "Latest window: alerts per tier (act: a hard data fault; investigate: beyond a calibrated "
    "threshold)",
    ["tier"],
)
SCORE_P_VALUE = Gauge("hmlops_drift_score_p_value", "Latest window: KS p-value of the risk score")
THRESHOLD = Gauge("hmlops_drift_threshold", "Per-test p-value threshold after Bonferroni")
BUFFERED_ROWS = Gauge("hmlops_drift_buffered_rows", "Scored encounters waiting for a full window")
PENDING_EVENTS = Gauge("hmlops_drift_pending_events", "Logged events waiting for their partner")
SINK_SENT = Counter("hmlops_drift_sink_sent", "Drift results delivered to the sink")
SINK_FAILURES = Counter(
    "hmlops_drift_sink_failures", "Drift results not delivered to the sink", ["reason"]
)


class DetectorNotReady(RuntimeError):
    """The reference could not be loaded or does not fit; the server never reports ready."""


def result_event_headers(result: DriftResult, source: str) -> dict[str, str]:
    return {
        "ce-specversion": SPEC_VERSION,
        "ce-id": result.window_id,
        "ce-type": RESULT_EVENT_TYPE,
        "ce-source": source,
        "ce-time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "ce-subject": result.model_version,
        "content-type": "application/json",
    }


def field_errors(field: str, message: str) -> str:
    """The error text every hospital-mlops server answers a 4xx with (as the predictor does):
    a JSON list of field-level problems inside KServe's ``{"error": ...}``."""
    return json.dumps({"errors": [{"field": field, "message": message}]})


def _check_sink(url: str | None) -> str | None:
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("the drift sink must be an http(s) URL")
    return url


class DriftDetector(Model):
    def __init__(
        self,
        name: str,
        registered_model: str,
        ref: str,
        *,
        reference_path: Path | None = None,
        window: int | None = None,
        store_url: str | None = None,
        sink: str | None = None,
    ) -> None:
        super().__init__(name)
        self.registered_model = registered_model
        self.ref = ref
        self.reference_path = reference_path
        self.window_override = window
        self.store_url = store_url
        self.sink = _check_sink(sink)
        self.ready = False
        self.not_ready_reason = "not loaded yet"
        self.latest_result: DriftResult | None = None
        self._queue: asyncio.Queue[ScoredWindow] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._sink_tasks: set[asyncio.Task[None]] = set()

    # --- loading ---------------------------------------------------------------------------------

    def load(self) -> bool:
        from hospital_mlops.drift.reference import read_reference
        from hospital_mlops.drift.store import (
            DriftStore,
            baseline_beside,
            redact_url,
            reference_from_registry,
        )
        from hospital_mlops.drift.tester import DriftTester
        from hospital_mlops.features import feature_set_named, served_inputs
        from hospital_mlops.inference.config import load_serving_config

        try:
            config = load_serving_config()
            if self.reference_path is not None:
                reference = read_reference(self.reference_path)
                baseline = baseline_beside(self.reference_path)
                self.model_version = f"{self.registered_model}@{self.ref}"
                expected = None  # a local file names no registered version to check against
            else:
                reference, self.model_version, baseline = reference_from_registry(
                    self.registered_model, self.ref
                )
                expected = self.model_version
            # the reference names the feature set its model was trained on
            fs = feature_set_named(str(reference.info.get("feature_set", "")))
            if fs is None:
                raise RuntimeError(
                    f"the drift reference's feature set {reference.info.get('feature_set')!r} "
                    "is not installed in this release"
                )
            window = self.window_override or config.drift.window
            tester = DriftTester(
                reference,
                fs,
                config.drift_backend,
                config.drift.p_value,
                self.model_version,
                window,
                baseline,
            )
            self.monitor = DriftMonitor(
                tester,
                served_inputs(fs),
                window,
                expected_model_version=expected,
                max_instances=config.limits.max_instances,
            )
            self.store = DriftStore(self.store_url or config.drift.store_url)
            self.latest_result = self.store.latest(self.model_version)
        except Exception as exc:  # any failure to load means not ready, never a half-ready server
            # A database error can quote its URL: never print the password in it.
            detail = re.sub(r"://[^/@\s]+@", "://***@", str(exc).splitlines()[0][:500])
            self.not_ready_reason = f"{type(exc).__name__}: {detail}"
            log.error("drift detector not ready: %s", self.not_ready_reason)
            self.ready = False
            return False
        THRESHOLD.set(tester.threshold)
        if self.latest_result is not None:
            self._publish(self.latest_result)
        self.ready = True
        log.info(
            "drift detector for %s: %s backend, window %d, reference %d rows, thresholds %s, "
            "results in %s",
            self.model_version,
            tester.backend.name,
            self.monitor.window,
            len(reference.features),
            tester.baseline_note,
            redact_url(self.store.url),
        )
        return True

    # --- intake --------------------------------------------------------------------------------

    async def predict(
        self, payload: Any, headers: dict[str, str] | None = None, response_headers: Any = None
    ) -> dict[str, Any]:
        """KServe's dataplane has already unwrapped the binary CloudEvent: ``payload`` is its
        decoded body and ``headers`` still carry the ``ce-*`` attributes."""
        try:
            body = json.dumps(payload).encode()
        except (TypeError, ValueError):
            self._count_bad_event("body")
            raise InvalidInput(field_errors("body", "must be a JSON document")) from None
        try:
            event = parse_binary_event(dict(headers or {}), body)
        except InvalidEvent as exc:
            self._count_bad_event(exc.field)
            raise InvalidInput(field_errors(exc.field, exc.message)) from None
        return self.accept(event)

    def accept(self, event: InferenceEvent) -> dict[str, Any]:
        EVENTS_RECEIVED.labels(event.kind).inc()
        intake = self.monitor.collect(event)
        for rejection in intake.rejections:
            EVENTS_INVALID.labels(rejection.reason, rejection.field).inc()
        for window in intake.windows:
            self._enqueue(window)
        BUFFERED_ROWS.set(self.monitor.buffered_rows)
        PENDING_EVENTS.set(self.monitor.pending_events)
        OUTSIDE_INTENDED_USE.set(self.monitor.outside_intended_use)
        return {
            "status": "accepted",
            "kind": event.kind,
            "buffered_rows": self.monitor.buffered_rows,
            "window": self.monitor.window,
            "windows_filled": len(intake.windows),
        }

    def _count_bad_event(self, field: str) -> None:
        EVENTS_INVALID.labels("invalid_event", field).inc()
        self.monitor.rejected[("invalid_event", field)] += 1

    # --- testing, storing, publishing ------------------------------------------------------------

    def _enqueue(self, window: ScoredWindow) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue(maxsize=MAX_QUEUED_WINDOWS)
            self._worker = asyncio.get_running_loop().create_task(self._test_windows())
        try:
            self._queue.put_nowait(window)
        except asyncio.QueueFull:
            WINDOWS_DROPPED.inc()
            log.warning("drift tests fell behind: a full window was dropped")

    async def _test_windows(self) -> None:
        assert self._queue is not None
        while True:
            window = await self._queue.get()
            try:
                result = await asyncio.to_thread(self.monitor.test, window)
                await asyncio.to_thread(self.store.save, result)
            except Exception as exc:  # a failed test must not stop the next ones
                TEST_FAILURES.inc()
                log.error("drift test of a window failed: %s", type(exc).__name__)
                continue
            finally:
                self._queue.task_done()
            self.latest_result = result
            WINDOWS_TESTED.inc()
            self._publish(result)
            log.info(
                "drift window %s: tier=%s alerts=%s (decided by %s; score KS p=%.3g) (%.0f ms)",
                result.window_id,
                result.tier,
                [f"{a['tier']}:{a['statistic']}:{a['subject']}" for a in result.alerts],
                result.decided_by,
                result.score_p_value,
                result.test_ms,
            )
            self._emit(result)

    def _publish(self, result: DriftResult) -> None:
        IS_DRIFT.set(1 if result.is_drift else 0)
        for tier in ("act", "investigate"):
            WINDOW_ALERTS.labels(tier).set(sum(a["tier"] == tier for a in result.alerts))
        SCORE_P_VALUE.set(result.score_p_value)
        for feature, p in result.feature_p_values.items():
            FEATURE_P_VALUE.labels(feature).set(p)
        for feature, d in result.feature_distances.items():
            FEATURE_DISTANCE.labels(feature).set(d)

    def _emit(self, result: DriftResult) -> None:
        if self.sink is None:
            return
        if len(self._sink_tasks) >= MAX_SINK_IN_FLIGHT:
            SINK_FAILURES.labels("dropped").inc()
            return
        task = asyncio.get_running_loop().create_task(self._post_result(result))
        self._sink_tasks.add(task)
        task.add_done_callback(self._sink_tasks.discard)

    async def _post_result(self, result: DriftResult) -> None:
        import httpx

        assert self.sink is not None
        headers = result_event_headers(result, f"/hospital-mlops/drift/{self.name}")
        try:
            async with httpx.AsyncClient(timeout=SINK_TIMEOUT_SECONDS) as client:
                answer = await client.post(
                    self.sink, content=json.dumps(result.as_dict()), headers=headers
                )
        except httpx.HTTPError as exc:
            SINK_FAILURES.labels("unreachable").inc()
            log.warning("drift sink unreachable: %s", type(exc).__name__)
            return
        if answer.status_code >= 300:
            SINK_FAILURES.labels("http_status").inc()
            log.warning("drift sink answered %d", answer.status_code)
        else:
            SINK_SENT.inc()

    # --- status ----------------------------------------------------------------------------------

    def latest_view(self) -> dict[str, Any]:
        status = {
            "model_version": self.model_version,
            "backend": self.monitor.tester.backend.name,
            "window": self.monitor.window,
            "buffered_rows": self.monitor.buffered_rows,
            "pending_events": self.monitor.pending_events,
            "rows_outside_intended_use": self.monitor.outside_intended_use,
            "events_received": dict(self.monitor.received),
            "events_invalid": {
                f"{r}:{f}": n for (r, f), n in sorted(self.monitor.rejected.items())
            },
        }
        if self.latest_result is None:
            return {"status": "collecting", **status}
        return {"status": "tested", **self.latest_result.as_dict(), **status}


# --- the HTTP surface beyond KServe's own ---------------------------------------------------------


def install_routes(detector: DriftDetector) -> None:
    """``POST /`` (logger / Trigger deliveries) and ``GET /drift/latest`` on the app KServe's
    ``RESTServer`` serves. Call once per process, before ``ModelServer.start``."""
    from kserve.model_server import app

    if getattr(app.state, "hmlops_drift_routes", False):
        return

    def bad(status: int, field: str, message: str) -> JSONResponse:
        return JSONResponse(status_code=status, content={"error": field_errors(field, message)})

    # FastAPI resolves these annotations from the module's globals (``Request`` must be one) to
    # hand the raw request over instead of reading a query parameter.
    async def receive(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                detector._count_bad_event("content-length")
                return bad(400, "content-length", "must be a whole number")
            if int(declared) > MAX_EVENT_BYTES:
                detector._count_bad_event("body")
                return bad(413, "body", f"larger than {MAX_EVENT_BYTES} bytes")
        body = await request.body()
        try:
            event = parse_binary_event(dict(request.headers), body)
        except InvalidEvent as exc:
            detector._count_bad_event(exc.field)
            return bad(413 if "larger" in exc.message else 400, exc.field, exc.message)
        return JSONResponse(status_code=202, content=detector.accept(event))

    async def latest() -> dict[str, Any]:
        return detector.latest_view()

    router = APIRouter(tags=["drift"])
    router.add_api_route("/", receive, methods=["POST"], response_model=None)
    router.add_api_route("/drift/latest", latest, methods=["GET"])
    app.include_router(router)
    app.state.hmlops_drift_routes = True


def serve_detector(
    registered_model: str,
    ref: str,
    port: int,
    bind_loopback: bool = True,
    sink: str | None = None,
    *,
    reference_path: Path | str | None = None,
    window: int | None = None,
    store_url: str | None = None,
) -> None:
    """Run the drift detector (blocking). The reference comes from ``registered_model@ref``'s
    evidence unless ``reference_path`` names a local ``drift_reference.parquet``."""
    from kserve import ModelServer

    from serving import server

    # Loopback unless told otherwise (a pod binds all interfaces); bodies capped at the event
    # contract's limit before anything parses them.
    server.configure_rest_server(
        "127.0.0.1" if bind_loopback else "0.0.0.0", MAX_EVENT_BYTES, "detector"
    )
    detector = DriftDetector(
        DETECTOR_NAME,
        registered_model,
        ref,
        reference_path=Path(reference_path) if reference_path else None,
        window=window,
        store_url=store_url,
        sink=sink or os.environ.get(SINK_ENV) or None,
    )
    if not detector.load():
        raise DetectorNotReady(f"{registered_model}@{ref}: {detector.not_ready_reason}")
    install_routes(detector)
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([detector])
