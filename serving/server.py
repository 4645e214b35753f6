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
# served name → the registry version this process serves: the one version its OIP
# ``/v2/models/NAME/versions/V/...`` paths address (the protocol's document lists only these)
SERVED_VERSIONS: dict[str, str] = {}
_VERSIONED = re.compile(r"^/v2/models/([^/]+)/versions/([^/]+)(/.*)?$")


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
    """Refuse oversized bodies (413) before any parsing. A model-version path (which KServe 0.20
    answers with a 5xx: its routes raise NotImplementedError) addresses the version this
    process serves, and is answered as the unversioned path; any other version is a plain
    404."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        versioned = _VERSIONED.match(path)
        if versioned:
            name, version, rest = versioned.groups()
            served = SERVED_VERSIONS.get(name)
            if served is None or version != served:
                where = f"version {served} of {name}" if served else "no versioned model"
                await _reply(
                    send, 404, "path", f"{name} version {version} is not served ({where} is)"
                )
                return
            path = f"/v2/models/{name}{rest or ''}"
            scope = {**scope, "path": path, "raw_path": path.encode()}
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
        _omit_nulls_from_v2_responses(model_server.app)

    rest.RESTServer.__init__ = init
    rest.RESTServer.create_application = create_application
    rest.RESTServer._hmlops_configured = True
    _metadata_names_the_served_version()


def _metadata_names_the_served_version() -> None:
    """OIP model metadata lists the model's versions; KServe 0.20 leaves them out. The one this
    process serves is the one its versioned paths address."""
    from kserve.protocol.dataplane import DataPlane

    original = DataPlane.model_metadata

    async def model_metadata(self: Any, model_name: str) -> dict[str, Any]:
        metadata: dict[str, Any] = await original(self, model_name)
        if model_name in SERVED_VERSIONS:
            metadata["versions"] = [SERVED_VERSIONS[model_name]]
        return metadata

    DataPlane.model_metadata = model_metadata


def _omit_nulls_from_v2_responses(app: Any) -> None:
    """KServe 0.20's v2 routes serialize unset optional fields as ``null`` (a metadata
    response's ``versions``, an infer response's and each output's ``parameters``), which the
    Open Inference Protocol's schema refuses: an optional field is absent or of its type. Each v2
    route is rebuilt with FastAPI's ``response_model_exclude_none``; the infer routes, which
    KServe declares without a response model, get the protocol's own (KServe's
    ``InferenceResponse``) so that it applies. A binary-tensor reply is a raw response and is
    passed through as it is."""
    from fastapi.routing import APIRoute
    from kserve.protocol.rest.v2_datamodels import InferenceResponse

    def rebuilt(route: APIRoute, path: str) -> APIRoute:
        model = route.response_model
        if model is None and path.endswith("/infer"):
            model = InferenceResponse
        return APIRoute(
            route.path,
            route.endpoint,
            response_model=model,
            response_model_exclude_none=True,
            methods=route.methods,
            name=route.name,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            dependencies=route.dependencies,
        )

    def rebuild(routes: list[Any], prefix: str) -> int:
        changed = 0
        for i, route in enumerate(routes):
            included = getattr(route, "original_router", None)  # FastAPI ≥0.165 includes lazily
            if included is not None:
                inner = prefix + str(getattr(route.include_context, "prefix", ""))
                below = rebuild(included.routes, inner)
                if below:
                    included._routes_version += 1  # its cached effective routes are stale
                changed += below
            elif isinstance(route, APIRoute) and (prefix + route.path).startswith("/v2"):
                routes[i] = rebuilt(route, prefix + route.path)
                changed += 1
        return changed

    if not rebuild(app.router.routes, ""):
        raise RuntimeError("no KServe v2 route found to serve without nulls")


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
    SERVED_VERSIONS[predictor.name] = str(predictor.version)
    # The loaded server holds ~400k long-lived objects; a full collection over them pauses a
    # request by ~0.2 s. Freeze them out of the collector's view (they live until exit anyway).
    gc.collect()
    gc.freeze()
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([predictor])
