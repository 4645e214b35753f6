"""Clinicians' responses to alerts, recorded against the prediction id: the workflow signal.

A response is ``acknowledged``, ``acted_on`` or ``overridden`` (with a reason). "Ignored" is
never recorded: it is derived, an alert with no response within the policy's feedback window.
The store is the prediction log's database (SQLite locally, PostgreSQL on a cluster), so a
response joins its prediction, and the prediction its outcome, in one query.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.store_schema import create_tables

Response = Literal["acknowledged", "acted_on", "overridden"]
RESPONSES: tuple[Response, ...] = ("acknowledged", "acted_on", "overridden")
MAX_REASON = 200
CLOCK_SKEW = timedelta(minutes=5)  # a response stamped this much before its alert is accepted

_metadata = sa.MetaData()
feedback = sa.Table(
    "feedback",
    _metadata,
    sa.Column("feedback_id", sa.String(36), primary_key=True),
    # One response per prediction: a second one is a duplicate, refused, never an overwrite.
    sa.Column("prediction_id", sa.String(36), nullable=False, unique=True),
    sa.Column("response", sa.String(16), nullable=False),
    sa.Column("override_reason", sa.String(MAX_REASON), nullable=True),
    sa.Column("responded_at", sa.String(40), nullable=False),  # the clinician's time (UTC)
    sa.Column("recorded_at", sa.String(40), nullable=False),  # when we stored it
    sa.Column("source", sa.String(40), nullable=False),  # e.g. cds-hooks, ehr-export
)


RejectionKind = Literal["invalid", "unknown_prediction", "duplicate"]


class FeedbackRejected(ValueError):
    """The response cannot be recorded; nothing was written. ``field`` names the input at
    fault; ``kind`` tells an invalid response from an unknown prediction and a duplicate (an
    HTTP adapter answers 400, 404 and 409)."""

    def __init__(self, message: str, kind: RejectionKind = "invalid") -> None:
        super().__init__(message)
        self.kind: RejectionKind = kind
        self.field, _, self.detail = message.partition(": ")


@dataclass(frozen=True)
class FeedbackRecorded:
    feedback_id: str
    prediction_id: str
    response: str
    responded_at: str
    clock_skew_seconds: float  # > 0 when the response was stamped before its alert (tolerated)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feedback_table(log: PredictionLog) -> sa.Table:
    create_tables(log.engine, _metadata)
    return feedback


def _utc(text: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise FeedbackRejected(f"{field}: {str(text)[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise FeedbackRejected(f"{field}: needs a UTC offset (e.g. 2026-11-28T10:00:00Z)")
    return parsed.astimezone(UTC)


def record_feedback(
    log: PredictionLog,
    prediction_id: str,
    response: str,
    responded_at: str,
    *,
    override_reason: str | None = None,
    allowed_reasons: tuple[str, ...] = (),
    source: str = "api",
    now: datetime | None = None,
) -> FeedbackRecorded:
    """Record one response. Refused, naming the field: an unknown prediction, a response that
    is not one of ``RESPONSES``, an override without a reason (or with one not in
    ``allowed_reasons`` when given), a reason on anything but an override, a time without an
    offset, in the future, or earlier than the prediction beyond ``CLOCK_SKEW``, and a second
    response to the same prediction."""
    if response not in RESPONSES:
        raise FeedbackRejected(f"response: must be one of {', '.join(RESPONSES)}")
    if response == "overridden":
        if not override_reason or not str(override_reason).strip():
            raise FeedbackRejected("override_reason: required when the alert is overridden")
        if len(override_reason) > MAX_REASON:
            raise FeedbackRejected(f"override_reason: at most {MAX_REASON} characters")
        if allowed_reasons and override_reason not in allowed_reasons:
            raise FeedbackRejected(
                f"override_reason: must be one of the configured reasons ({len(allowed_reasons)})"
            )
    elif override_reason:
        raise FeedbackRejected("override_reason: only an overridden alert has one")
    when = _utc(responded_at, "responded_at")
    now = now or datetime.now(UTC)
    if when > now + CLOCK_SKEW:
        raise FeedbackRejected("responded_at: is in the future")
    table = feedback_table(log)
    with log.engine.begin() as conn:
        scored = conn.execute(
            sa.select(predictions.c.scored_at).where(predictions.c.prediction_id == prediction_id)
        ).scalar_one_or_none()
        if scored is None:
            raise FeedbackRejected(
                f"prediction_id: no prediction {prediction_id[:40]!r} logged", "unknown_prediction"
            )
        skew = (_utc(scored, "scored_at") - when).total_seconds()
        if skew > CLOCK_SKEW.total_seconds():
            raise FeedbackRejected(
                f"responded_at: {when.isoformat()} is before the prediction was made "
                f"({scored}); a response cannot precede its alert"
            )
        existing = conn.execute(
            sa.select(table.c.response).where(table.c.prediction_id == prediction_id)
        ).scalar_one_or_none()
        if existing is not None:
            raise FeedbackRejected(
                f"prediction_id: a response ({existing}) is already recorded for this "
                "prediction; duplicates are refused",
                "duplicate",
            )
        feedback_id = str(uuid.uuid4())
        stamped = when.isoformat().replace("+00:00", "Z")
        row = {
            "feedback_id": feedback_id,
            "prediction_id": prediction_id,
            "response": response,
            "override_reason": override_reason if response == "overridden" else None,
            "responded_at": stamped,
            "recorded_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "source": source[:40],
        }
        try:
            conn.execute(table.insert(), [row])
        except sa.exc.IntegrityError:
            # another request for the same prediction committed between our check and insert
            raise FeedbackRejected(
                "prediction_id: a response was recorded for this prediction at the same moment; "
                "duplicates are refused",
                "duplicate",
            ) from None
    return FeedbackRecorded(feedback_id, prediction_id, response, stamped, max(skew, 0.0))


def recorded_feedback(log: PredictionLog, prediction_id: str) -> dict[str, Any] | None:
    """The response recorded for one prediction, or None."""
    table = feedback_table(log)
    with log.engine.connect() as conn:
        row = (
            conn.execute(sa.select(table).where(table.c.prediction_id == prediction_id))
            .mappings()
            .one_or_none()
        )
    return dict(row) if row is not None else None


def responses(log: PredictionLog, model: str, version: int) -> pd.DataFrame:
    """Per alerted prediction of one version: ``scored_at``, and its ``response``,
    ``override_reason`` and ``responded_at`` (missing when there is none)."""
    p, f = predictions, feedback_table(log)
    query = (
        sa.select(
            p.c.prediction_id,
            p.c.scored_at,
            f.c.response,
            f.c.override_reason,
            f.c.responded_at,
        )
        .select_from(p.outerjoin(f, p.c.prediction_id == f.c.prediction_id))
        .where(p.c.model_name == model, p.c.model_version == version, p.c.alert.is_(True))
    )
    with log.engine.connect() as conn:
        frame = pd.DataFrame(
            conn.execute(query).all(),
            columns=["prediction_id", "scored_at", "response", "override_reason", "responded_at"],
        )
    frame["scored_at"] = pd.to_datetime(frame["scored_at"], utc=True, format="ISO8601")
    frame["responded_at"] = pd.to_datetime(frame["responded_at"], utc=True, format="ISO8601")
    return frame
