"""The inference-logger CloudEvents contract, shared by the emitter and the drift detector.

On a cluster the KServe agent (the ``logger`` of an InferenceService) posts each request and each
response to the logger URL as a CloudEvent in *binary* mode: the event attributes travel as
``ce-*`` HTTP headers and the body is the untouched JSON payload. The request and its response
share one ``ce-id``. Locally our predictor emits exactly these events so the same detector code
runs on a laptop and in a cluster.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
EVENT_TYPES = (REQUEST_TYPE, RESPONSE_TYPE)
SPEC_VERSION = "1.0"
MAX_EVENT_BYTES = 2_000_000  # a 100-instance request is ~60 kB; anything far larger is refused

Kind = Literal["request", "response"]


class InvalidEvent(ValueError):
    """A body or header set that is not a KServe inference-logger CloudEvent; names the field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


@dataclass(frozen=True)
class InferenceEvent:
    id: str
    kind: Kind
    inference_service: str
    component: str
    namespace: str
    time: str
    data: Any  # the decoded JSON body


def binary_headers(
    event_id: str,
    kind: Kind,
    inference_service: str,
    *,
    component: str = "predictor",
    namespace: str = "default",
    source: str = "http://localhost:9081/",
    endpoint: str = "",
    time: str | None = None,
) -> dict[str, str]:
    """The headers the KServe agent sets on a logged request or response (binary content mode)."""
    return {
        "ce-specversion": SPEC_VERSION,
        "ce-id": event_id,
        "ce-type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "ce-source": source,
        "ce-time": time or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "ce-inferenceservicename": inference_service,
        "ce-namespace": namespace,
        "ce-component": component,
        "ce-endpoint": endpoint,
        "content-type": "application/json",
    }


def new_event_id() -> str:
    return str(uuid.uuid4())


def parse_binary_event(headers: dict[str, str], body: bytes) -> InferenceEvent:
    """Headers + body → an ``InferenceEvent``; anything else raises ``InvalidEvent``.

    Header names are matched case-insensitively (HTTP/1.1 and the Knative broker differ)."""
    h = {str(k).lower(): str(v) for k, v in headers.items()}
    if len(body) > MAX_EVENT_BYTES:
        raise InvalidEvent("body", f"larger than {MAX_EVENT_BYTES} bytes")
    if h.get("ce-specversion") != SPEC_VERSION:
        raise InvalidEvent("ce-specversion", f"must be {SPEC_VERSION!r}")
    event_id = h.get("ce-id", "")
    if not event_id or len(event_id) > 128:
        raise InvalidEvent("ce-id", "must be a non-empty id of at most 128 characters")
    event_type = h.get("ce-type", "")
    if event_type not in EVENT_TYPES:
        raise InvalidEvent("ce-type", f"must be one of {list(EVENT_TYPES)}")
    content_type = h.get("content-type", "application/json").split(";")[0].strip()
    if content_type != "application/json":
        raise InvalidEvent("content-type", "must be application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent("body", f"is not JSON ({type(exc).__name__})") from None
    return InferenceEvent(
        id=event_id,
        kind="request" if event_type == REQUEST_TYPE else "response",
        inference_service=h.get("ce-inferenceservicename", "")[:253],
        component=h.get("ce-component", "")[:63],
        namespace=h.get("ce-namespace", "")[:63],
        time=h.get("ce-time", "")[:64],
        data=data,
    )
