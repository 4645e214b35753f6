"""Start KServe model servers: loopback binding and request limits shared by all three."""

from __future__ import annotations

import gc
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from kserve.errors import InvalidInput

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_settings: dict[str, Any] = {"host": "127.0.0.1", "max_body_bytes": 1_000_000, "service": "kserve"}


def _is_json(body: bytes) -> bool:
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return True


async def _reply(send: Send, status: int, field: str, message: str) -> None:
    body = json.dumps({"error": json.dumps({"errors": [{"field": field, "message": message}]})})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body.encode()})


class RequestLimits:
    """Refuse oversized bodies (413) before any parsing, and paths KServe 0.20 would answer with
    a 5xx (model-version routes raise NotImplementedError → 501) with a plain 404."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        if path.startswith("/v2/models/") and "/versions/" in path:
            await _reply(send, 404, "path", "model versions are not addressable; see model_version")
            return
        headers = dict(scope.get("headers") or [])
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            content_type = headers.get(b"content-type", b"").split(b";")[0].strip()
            if content_type != b"application/json":
                # Without it KServe reads the body as the binary-tensor extension, which raw
                # clinical inputs never use.
                await _reply(send, 415, "content-type", "must be application/json")
                return
        declared = headers.get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reply(send, 400, "content-length", "must be a whole number of bytes")
                return
            if int(declared) > self.max_body_bytes:
                await _reply(send, 413, "body", f"larger than {self.max_body_bytes} bytes")
                return
        # Read the whole body first (it is capped), so a chunked upload cannot exceed the cap.
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reply(send, 413, "body", f"larger than {self.max_body_bytes} bytes")
                return
            chunks.append(chunk)
            more = bool(message.get("more_body", False))
        body = b"".join(chunks)
        if scope.get("method") == "POST" and not body:
            await _reply(send, 400, "body", "is empty; send a JSON object")
            return
        if scope.get("method") == "POST" and not _is_json(body):
            # One clear error for every endpoint (KServe's own says "Unrecognized request
            # format"); strict JSON: NaN and Infinity are not numbers a chart can hold.
            await _reply(send, 400, "body", "is not valid JSON (NaN and Infinity are refused)")
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


_KSERVE_FIELD = re.compile(r"(?:for input|input) '?([A-Za-z_][\w-]{0,63})'?|'([\w-]{1,63})' header")
log = logging.getLogger("hospital_mlops.serving.server")


async def field_errors_handler(request: Any, exc: Exception) -> Any:
    """Every 400 in one shape, ``{"error": "{\"errors\": [{field, message}]}"}``: ours pass
    through; KServe's own decoding errors get the input they name (or ``body``). Nothing about
    the request's values is logged: clinical inputs stay out of the logs."""
    from fastapi.responses import JSONResponse

    text = str(exc)
    if not text.startswith('{"errors"'):
        found = _KSERVE_FIELD.search(text)
        field = next((g for g in found.groups() if g), "body") if found else "body"
        text = json.dumps({"errors": [{"field": field, "message": text[:300]}]})
    log.info("400 on %s", request.url.path)
    return JSONResponse(status_code=400, content={"error": text})


def configure_rest_server(
    host: str = "127.0.0.1", max_body_bytes: int = 1_000_000, service: str = "kserve"
) -> None:
    """Patch KServe 0.20's REST server once per process: bind ``host`` (it hard-codes 0.0.0.0;
    a laptop must not expose patient scoring to its network), add ``RequestLimits``, and in
    front of everything the bearer tokens (when configured) and the access audit."""
    from kserve.protocol.rest import server as rest

    _settings.update(host=host, max_body_bytes=max_body_bytes, service=service)
    if getattr(rest.RESTServer, "_hmlops_configured", False):
        return
    original_init = rest.RESTServer.__init__
    original_create = rest.RESTServer.create_application

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.config.host = _settings["host"]

    def create_application(self: Any) -> None:
        original_create(self)
        from kserve import model_server

        from hospital_mlops.security.api_access import access_log_from_env, tokens_from_env
        from serving.access import AccessControl

        model_server.app.add_middleware(RequestLimits, max_body_bytes=_settings["max_body_bytes"])
        # added last, so outermost: an unauthenticated body is never read
        model_server.app.add_middleware(
            AccessControl,
            service=_settings["service"],
            tokens=tokens_from_env(),
            log=access_log_from_env(),
        )
        model_server.app.add_exception_handler(InvalidInput, field_errors_handler)

    rest.RESTServer.__init__ = init
    rest.RESTServer.create_application = create_application
    rest.RESTServer._hmlops_configured = True


def bind_loopback() -> None:
    """Local servers bind 127.0.0.1 (with the default request limits)."""
    from hospital_mlops.inference.config import load_serving_config

    configure_rest_server("127.0.0.1", load_serving_config().limits.max_body_bytes)


class ModelNotReady(RuntimeError):
    """The model could not be loaded and verified; the server never reports ready."""


def serve_predictor(
    registered_model: str,
    ref: str,
    port: int,
    *,
    bind: str = "127.0.0.1",
    logger_url: str | None = None,
    expected_sha256: str | None = None,
    served_name: str | None = None,
) -> None:
    """``ref == "path"`` serves the bundle directory ``registered_model`` (see serving_bundle).
    The model is served under ``served_name``, by default its use case's (``served_as``)."""
    from kserve import ModelServer

    from hospital_mlops.inference.config import load_serving_config
    from serving.predictor import RiskPredictor

    configure_rest_server(bind, load_serving_config().limits.max_body_bytes, "predictor")
    predictor = RiskPredictor(
        served_name or "model",
        registered_model,
        ref,
        logger_url=logger_url,
        expected_sha256=expected_sha256,
    )
    if not predictor.load():
        # As on a cluster, where the pod never passes its readiness probe: no server starts.
        raise ModelNotReady(f"{registered_model}@{ref}: {predictor.not_ready_reason}")
    predictor.name = served_name or predictor.setup.use_case.served_as
    # The loaded server holds ~400k long-lived objects; a full collection over them pauses a
    # request by ~0.2 s. Freeze them out of the collector's view (they live until exit anyway).
    gc.collect()
    gc.freeze()
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([predictor])
