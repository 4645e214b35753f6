"""The feedback API: clinicians' responses to alerts, over HTTP, recorded against the
prediction id in the prediction log's database (``monitoring.feedback``).

``POST /v1/feedback``                 record one response → 201 (200: a replay), or 400 / 404 /
                                      413 / 415
``GET  /v1/feedback/{prediction_id}`` the latest response recorded for a prediction → 200 or 404
``GET  /healthz``                     the database answers → 200, else 503

Every refusal is ``{"errors": [{"field", "message"}]}`` and writes nothing. Nothing of a body is
logged. An EHR integration posts here directly; the CDS Hooks service mounts the same router
beside the spec's own ``/cds-services/{id}/feedback``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.monitoring.feedback import (
    MAX_REASON,
    FeedbackRejected,
    record_feedback,
    recorded_feedback,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16_384
MAX_ID = 36
MAX_SOURCE = 40
REQUIRED = ("prediction_id", "response", "responded_at")
OPTIONAL = ("override_reason", "source")
STATUS = {"invalid": 400, "unknown_prediction": 404}


class BodyTooLarge(ValueError):
    pass


async def capped_body(request: Request, limit: int) -> bytes:
    """The body, refused before it is read when it declares more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge(f"larger than {limit} bytes")
    body = await request.body()
    if len(body) > limit:
        raise BodyTooLarge(f"larger than {limit} bytes")
    return body


def refusal(status: int, errors: list[tuple[str, str]]) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"errors": [{"field": f, "message": m} for f, m in errors]}
    )


def parse_feedback(body: bytes) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """The body's fields, or every structural problem with it at once (field, message)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, [("body", "is not valid JSON")]
    if not isinstance(data, dict):
        return {}, [("body", "must be a JSON object")]
    errors = [
        (k, "is not a field of a feedback record") for k in data if k not in REQUIRED + OPTIONAL
    ]
    for key in REQUIRED:
        if data.get(key) in (None, ""):
            errors.append((key, "is required"))
    limits = {"prediction_id": MAX_ID, "override_reason": MAX_REASON, "source": MAX_SOURCE}
    for key in REQUIRED + OPTIONAL:
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            errors.append((key, "must be a string"))
        elif key in limits and len(value) > limits[key]:
            errors.append((key, f"at most {limits[key]} characters"))
    return data, errors


def feedback_router(
    prediction_log: PredictionLog, override_reasons: tuple[str, ...], source: str = "api"
) -> APIRouter:
    router = APIRouter(tags=["feedback"])

    async def record(request: Request) -> JSONResponse:
        if "json" not in request.headers.get("content-type", ""):
            return refusal(415, [("content-type", "must be application/json")])
        try:
            body = await capped_body(request, MAX_BODY_BYTES)
        except BodyTooLarge as exc:
            return refusal(413, [("body", str(exc))])
        data, errors = parse_feedback(body)
        if errors:
            return refusal(400, errors)
        try:
            done = record_feedback(
                prediction_log,
                data["prediction_id"],
                data["response"],
                data["responded_at"],
                override_reason=data.get("override_reason"),
                allowed_reasons=override_reasons,
                source=data.get("source") or source,
            )
        except FeedbackRejected as exc:
            return refusal(STATUS[exc.kind], [(exc.field, exc.detail)])
        except sa.exc.SQLAlchemyError as exc:
            # the store is down or full: say so, keep the caller's record for a retry
            log.error("feedback not recorded: %s", type(exc).__name__)
            return refusal(503, [("store", "the feedback store is unavailable; retry")])
        # a replay (the same answer again) wrote nothing new: 200, not 201
        return JSONResponse(status_code=200 if done.replayed else 201, content=done.as_dict())

    async def lookup(prediction_id: str) -> JSONResponse:
        if len(prediction_id) > MAX_ID:
            return refusal(400, [("prediction_id", f"at most {MAX_ID} characters")])
        row = recorded_feedback(prediction_log, prediction_id)
        if row is None:
            return refusal(404, [("prediction_id", "no response recorded for this prediction")])
        return JSONResponse(content=row)

    async def health() -> JSONResponse:
        try:
            with prediction_log.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return JSONResponse(status_code=503, content={"status": type(exc).__name__})
        return JSONResponse(content={"status": "ok"})

    router.add_api_route("/v1/feedback", record, methods=["POST"], response_model=None)
    router.add_api_route(
        "/v1/feedback/{prediction_id}", lookup, methods=["GET"], response_model=None
    )
    router.add_api_route("/healthz", health, methods=["GET"], response_model=None)
    return router


def create_app(prediction_log: PredictionLog, override_reasons: tuple[str, ...]) -> FastAPI:
    from hospital_mlops.security.api_access import access_log_from_env, tokens_from_env
    from serving.access import AccessControl

    app = FastAPI(title="hospital-mlops feedback", docs_url=None, redoc_url=None)
    app.include_router(feedback_router(prediction_log, override_reasons))
    app.add_middleware(
        AccessControl, service="feedback-api", tokens=tokens_from_env(), log=access_log_from_env()
    )
    return app


def serve_feedback_api(port: int, bind: str = "127.0.0.1", log_url: str | None = None) -> None:
    """Run the API (blocking) on ``bind:port`` over the prediction log at ``log_url`` (default:
    ``HMLOPS_PREDICTION_LOG_URL`` or the state directory's SQLite)."""
    import uvicorn

    from hospital_mlops.monitoring.policy import load_monitoring_policy

    reasons = load_monitoring_policy().feedback.override_reasons
    app = create_app(PredictionLog(log_url), reasons)
    uvicorn.run(app, host=bind, port=port, log_level="info")
