"""Clinicians' responses to alerts, recorded against the prediction id: the workflow signal.

A response is ``acknowledged``, ``acted_on`` or ``overridden`` (with a reason). "Ignored" is
never recorded: it is derived, an alert with no response within the policy's feedback window.
The store is the prediction log's database (SQLite locally, PostgreSQL on a cluster), so a
response joins its prediction, and the prediction its outcome, in one query.

A clinician may answer the same alert again (CDS Hooks lets a client send feedback for one card
instance more than once): each different answer is a later *assessment*, numbered and kept,
never an overwrite. The same answer sent again (a client's retry) is a replay: it is
acknowledged and not counted twice. The workflow numbers read the first answer's time (how soon
someone responded) and the latest answer's content (what the clinician finally made of it).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
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
    # the prediction's id; for a CDS card that carried no prediction (a fallback, a "not
    # scored" card), the card's uuid, with ``card_kind`` saying so
    sa.Column("prediction_id", sa.String(36), nullable=False),
    # 1 for the first answer, 2 for the next: a later assessment, never an overwrite
    sa.Column("assessment", sa.Integer, nullable=False),
    sa.Column("response", sa.String(16), nullable=False),
    sa.Column("override_reason", sa.String(MAX_REASON), nullable=True),
    sa.Column("responded_at", sa.String(40), nullable=False),  # the clinician's time (UTC)
    sa.Column("recorded_at", sa.String(40), nullable=False),  # when we stored it
    sa.Column("source", sa.String(40), nullable=False),  # e.g. cds-hooks, ehr-export
    sa.Column("card_kind", sa.String(16), nullable=True),  # risk, fallback, not_scored (CDS)
    # two answers committed at once cannot take the same number; also the lookup's index
    sa.UniqueConstraint("prediction_id", "assessment", name="uq_feedback_assessment"),
)
_COPIED = ("feedback_id", "prediction_id", "response", "override_reason", "responded_at",
           "recorded_at", "source")  # fmt: skip
_ATTEMPTS = 5


RejectionKind = Literal["invalid", "unknown_prediction"]


class FeedbackRejected(ValueError):
    """The response cannot be recorded; nothing was written. ``field`` names the input at
    fault; ``kind`` tells an invalid response from an unknown prediction (an HTTP adapter
    answers 400 and 404)."""

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
    assessment: int = 1  # this answer's number among the prediction's answers
    replayed: bool = False  # the same answer was already recorded: nothing new was written

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def feedback_table(log: PredictionLog) -> sa.Table:
    create_tables(log.engine, _metadata, migrate=_number_assessments)
    return feedback


def _number_assessments(conn: sa.Connection) -> None:
    """A store written before repeated answers were kept holds one row per prediction, under a
    unique prediction id: each row becomes that prediction's first assessment, once."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("feedback")}
    if conn.dialect.name != "postgresql":
        if "assessment" not in present or _OLD_TABLE in sa.inspect(conn).get_table_names():
            _rebuild_on_sqlite(conn)
        return
    if "assessment" in present:
        return
    # PostgreSQL: under the schema lock create_tables holds, in its transaction
    for unique in sa.inspect(conn).get_unique_constraints("feedback"):
        if unique["column_names"] == ["prediction_id"]:
            conn.execute(sa.text(f'ALTER TABLE feedback DROP CONSTRAINT "{unique["name"]}"'))
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN assessment INTEGER"))
    conn.execute(sa.text("ALTER TABLE feedback ADD COLUMN card_kind VARCHAR(16)"))
    conn.execute(sa.text("UPDATE feedback SET assessment = 1"))
    conn.execute(sa.text("ALTER TABLE feedback ALTER COLUMN assessment SET NOT NULL"))
    conn.execute(
        sa.text(
            "ALTER TABLE feedback ADD CONSTRAINT uq_feedback_assessment "
            "UNIQUE (prediction_id, assessment)"
        )
    )


_OLD_TABLE = "feedback_before_assessments"


def _rebuild_on_sqlite(conn: sa.Connection) -> None:
    """SQLite cannot drop a constraint: the table is rebuilt under the new shape, in one
    transaction that holds the database's write lock (pysqlite runs DDL outside any transaction
    unless one is begun), so another process never sees it half-done and a crash leaves the old
    table whole. Rows a crashed earlier rebuild left behind are taken in too."""
    raw = conn.connection.dbapi_connection
    if raw is not None and not getattr(raw, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    tables = set(sa.inspect(conn).get_table_names())
    present = {c["name"] for c in sa.inspect(conn).get_columns("feedback")}
    if "assessment" not in present:  # still the old shape once the lock is ours
        conn.exec_driver_sql(f"ALTER TABLE feedback RENAME TO {_OLD_TABLE}")
        feedback.create(conn)
        tables.add(_OLD_TABLE)
    if _OLD_TABLE in tables:
        columns = ", ".join(_COPIED)
        conn.exec_driver_sql(
            f"INSERT INTO feedback ({columns}, assessment) "
            f"SELECT {columns}, 1 + (SELECT COUNT(*) FROM feedback AS f "
            f"WHERE f.prediction_id = o.prediction_id) FROM {_OLD_TABLE} AS o "
            "WHERE o.feedback_id NOT IN (SELECT feedback_id FROM feedback)"
        )
        conn.exec_driver_sql(f"DROP TABLE {_OLD_TABLE}")


def _utc(text: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise FeedbackRejected(f"{field}: {str(text)[:40]!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise FeedbackRejected(f"{field}: needs a UTC offset (e.g. 2026-11-28T10:00:00Z)")
    return parsed.astimezone(UTC)


def check_time(responded_at: str, issued_at: str | None, now: datetime) -> datetime:
    """The response time in UTC. Refused, naming the field: a time without an offset, in the
    future, or earlier than the alert it answers (``issued_at``) beyond ``CLOCK_SKEW``."""
    when = _utc(responded_at, "responded_at")
    if when > now + CLOCK_SKEW:
        raise FeedbackRejected("responded_at: is in the future")
    if issued_at is not None and _utc(issued_at, "scored_at") - when > CLOCK_SKEW:
        raise FeedbackRejected(
            f"responded_at: {when.isoformat()} is before the prediction was made "
            f"({issued_at}); a response cannot precede its alert"
        )
    return when


def check_response(
    response: str,
    override_reason: str | None,
    allowed_reasons: tuple[str, ...] = (),
    *,
    reason_required: bool = True,
) -> None:
    """Refused, naming the field: a response not in ``RESPONSES``, an override without a
    reason (when ``reason_required``), a reason too long or not in ``allowed_reasons`` when
    given, and a reason on anything but an override."""
    if response not in RESPONSES:
        raise FeedbackRejected(f"response: must be one of {', '.join(RESPONSES)}")
    if response == "overridden":
        given = override_reason is not None and bool(str(override_reason).strip())
        if not given and reason_required:
            raise FeedbackRejected("override_reason: required when the alert is overridden")
        if given and len(str(override_reason)) > MAX_REASON:
            raise FeedbackRejected(f"override_reason: at most {MAX_REASON} characters")
        if given and allowed_reasons and override_reason not in allowed_reasons:
            raise FeedbackRejected(
                f"override_reason: must be one of the configured reasons ({len(allowed_reasons)})"
            )
    elif override_reason:
        raise FeedbackRejected("override_reason: only an overridden alert has one")


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
    """Record one response to a logged prediction. Refused, naming the field: an unknown
    prediction, a bad response (``check_response``), a time without an offset, in the future,
    or earlier than the prediction beyond ``CLOCK_SKEW``. A different answer to an answered
    prediction is its next assessment; the same answer again is a replay, not recorded twice."""
    check_response(response, override_reason, allowed_reasons)

    def scored_at(conn: sa.Connection) -> str | None:
        found: str | None = conn.execute(
            sa.select(predictions.c.scored_at).where(predictions.c.prediction_id == prediction_id)
        ).scalar_one_or_none()
        return found

    return record_response(
        log,
        prediction_id,
        scored_at,
        response,
        responded_at,
        override_reason=override_reason,
        source=source,
        now=now,
        unknown=f"prediction_id: no prediction {prediction_id[:40]!r} logged",
    )


def record_response(
    log: PredictionLog,
    key: str,
    issued_at: Callable[[sa.Connection], str | None],
    response: str,
    responded_at: str,
    *,
    override_reason: str | None,
    source: str,
    now: datetime | None,
    unknown: str,
    card_kind: str | None = None,
) -> FeedbackRecorded:
    """Record an already-checked response against ``key`` (a prediction id, or the uuid of a
    card that carried none), whose alert ``issued_at`` finds in the same transaction. The
    answers to one key are numbered; two committed at once cannot share a number, so the loser
    reads again and either replays the winner's answer or takes the next number."""
    now = now or datetime.now(UTC)
    when = check_time(responded_at, None, now)
    stamped = when.isoformat().replace("+00:00", "Z")
    reason = override_reason if response == "overridden" and override_reason else None
    table = feedback_table(log)
    for attempt in range(_ATTEMPTS):
        try:
            with log.engine.begin() as conn:
                issued = issued_at(conn)
                if issued is None:
                    raise FeedbackRejected(unknown, "unknown_prediction")
                check_time(responded_at, issued, now)
                skew = (_utc(issued, "scored_at") - when).total_seconds()
                earlier = conn.execute(
                    sa.select(
                        table.c.feedback_id,
                        table.c.assessment,
                        table.c.response,
                        table.c.override_reason,
                        table.c.responded_at,
                    ).where(table.c.prediction_id == key)
                ).all()
                for answer in earlier:
                    if (answer.response, answer.override_reason, answer.responded_at) == (
                        response,
                        reason,
                        stamped,
                    ):
                        return FeedbackRecorded(
                            answer.feedback_id, key, response, stamped, max(skew, 0.0),
                            answer.assessment, replayed=True,
                        )  # fmt: skip
                number = 1 + max((answer.assessment for answer in earlier), default=0)
                feedback_id = str(uuid.uuid4())
                row = {
                    "feedback_id": feedback_id,
                    "prediction_id": key,
                    "assessment": number,
                    "response": response,
                    "override_reason": reason,
                    "responded_at": stamped,
                    "recorded_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
                    "source": source[:40],
                    "card_kind": card_kind,
                }
                conn.execute(table.insert(), [row])
            return FeedbackRecorded(feedback_id, key, response, stamped, max(skew, 0.0), number)
        except sa.exc.IntegrityError:
            # another answer to the same alert committed this number first: read again
            if attempt == _ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def recorded_feedback(log: PredictionLog, prediction_id: str) -> dict[str, Any] | None:
    """The latest answer recorded for one prediction, with how many ``assessments`` it has
    had, or None."""
    history = feedback_history(log, prediction_id)
    if not history:
        return None
    return {**history[-1], "assessments": len(history)}


def feedback_history(log: PredictionLog, prediction_id: str) -> list[dict[str, Any]]:
    """Every answer recorded for one prediction, in the clinician's order (then recording)."""
    table = feedback_table(log)
    with log.engine.connect() as conn:
        rows = (
            conn.execute(
                sa.select(table)
                .where(table.c.prediction_id == prediction_id)
                .order_by(table.c.responded_at, table.c.assessment)
            )
            .mappings()
            .all()
        )
    return [dict(row) for row in rows]


def responses(log: PredictionLog, model: str, version: int) -> pd.DataFrame:
    """Per alerted prediction of one version: ``scored_at``; the latest answer's ``response``
    and ``override_reason``; the first answer's ``responded_at``; and ``assessments``, how many
    answers it had (0, with the others missing, when none)."""
    p, f = predictions, feedback_table(log)
    query = (
        sa.select(
            p.c.prediction_id,
            p.c.scored_at,
            f.c.response,
            f.c.override_reason,
            f.c.responded_at,
            f.c.assessment,
        )
        .select_from(p.outerjoin(f, p.c.prediction_id == f.c.prediction_id))
        .where(p.c.model_name == model, p.c.model_version == version, p.c.alert.is_(True))
    )
    with log.engine.connect() as conn:
        rows = pd.DataFrame(
            conn.execute(query).all(),
            columns=["prediction_id", "scored_at", "response", "override_reason",
                     "responded_at", "assessment"],
        )  # fmt: skip
    rows["scored_at"] = pd.to_datetime(rows["scored_at"], utc=True, format="ISO8601")
    rows["responded_at"] = pd.to_datetime(rows["responded_at"], utc=True, format="ISO8601")
    rows = rows.sort_values(["prediction_id", "responded_at", "assessment"], kind="stable")
    grouped = rows.groupby("prediction_id", sort=False)
    # the latest answer's own fields (an override without a reason must not borrow one)
    latest = rows.drop_duplicates("prediction_id", keep="last").set_index("prediction_id")
    frame = latest[["scored_at", "response", "override_reason"]].copy()
    frame["responded_at"] = grouped["responded_at"].min()
    frame["assessments"] = grouped["assessment"].count().astype("int64")
    return frame.reset_index()[
        ["prediction_id", "scored_at", "response", "override_reason", "responded_at",
         "assessments"]
    ]  # fmt: skip
