"""The cards the CDS service issued without a prediction behind them (a fallback, a "not
scored" card), by uuid, so that feedback on every card it issued is accepted, as CDS Hooks
requires. A risk card's uuid is its prediction's id, already in the prediction log.

Nothing about the patient is kept: the uuid, the service, the model it stood in for, the kind,
the time, and for an earlier estimate shown as a fallback, that estimate's prediction id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.store_schema import create_tables

CardKind = Literal["risk", "fallback", "not_scored"]

_metadata = sa.MetaData()
issued_cards = sa.Table(
    "issued_cards",
    _metadata,
    sa.Column("card_uuid", sa.String(36), primary_key=True),
    sa.Column("service_id", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(128), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("issued_at", sa.String(40), nullable=False),  # UTC
    sa.Column("shown_prediction_id", sa.String(36), nullable=True),  # an earlier estimate
)


@dataclass(frozen=True)
class IssuedCard:
    uuid: str
    kind: CardKind
    issued_at: str  # UTC, ISO 8601
    alert: bool = False  # a risk card at its alert threshold (where a suggestion is offered)


def _table(log: PredictionLog) -> sa.Table:
    create_tables(log.engine, _metadata)
    return issued_cards


def remember_card(
    log: PredictionLog,
    card_uuid: str,
    kind: CardKind,
    *,
    service_id: str,
    model_name: str,
    issued_at: datetime,
    shown_prediction_id: str | None = None,
) -> None:
    """Record a card issued without a prediction of its own (``kind`` fallback or
    not_scored)."""
    row = {
        "card_uuid": card_uuid,
        "service_id": service_id[:64],
        "model_name": model_name[:128],
        "kind": kind,
        "issued_at": issued_at.isoformat().replace("+00:00", "Z"),
        "shown_prediction_id": shown_prediction_id,
    }
    with log.engine.begin() as conn:
        conn.execute(_table(log).insert(), [row])


def issued_card(log: PredictionLog, card_uuid: str) -> IssuedCard | None:
    """The card the service issued under this uuid: a risk card (its prediction, as logged) or
    one recorded by ``remember_card``; None when the service never issued it."""
    table = _table(log)
    with log.engine.connect() as conn:
        scored = conn.execute(
            sa.select(predictions.c.scored_at, predictions.c.alert).where(
                predictions.c.prediction_id == card_uuid
            )
        ).one_or_none()
        if scored is not None:
            return IssuedCard(card_uuid, "risk", str(scored.scored_at), scored.alert is True)
        row = conn.execute(
            sa.select(table.c.kind, table.c.issued_at).where(table.c.card_uuid == card_uuid)
        ).one_or_none()
    if row is None:
        return None
    kind: CardKind = "fallback" if row.kind == "fallback" else "not_scored"
    return IssuedCard(card_uuid, kind, str(row.issued_at))
