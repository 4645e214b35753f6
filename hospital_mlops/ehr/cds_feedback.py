"""CDS Hooks feedback (the spec's ``/feedback``) on any card the service issued: a risk card,
a fallback or a "not scored" card.

The whole list is checked first (every item's shape, that its card was issued here, its
reason, its suggestions and its time), and only then recorded, so a refused list writes
nothing. A store that fails part-way is a 503: the client's retry of the whole list replays
what was recorded and records the rest. An ``accepted`` card is ``acknowledged``, or
``acted_on`` when the clinician accepted its suggestion; ``overridden`` keeps the card's
reason (or none: the spec makes it optional). A second, different answer to a card is
recorded as a later assessment; the same answer again (a client's retry) is a replay,
acknowledged and not counted twice (``monitoring.feedback``). Feedback on a card without a
prediction is kept with its kind, outside the model's workflow numbers: no model alert was
shown. A clinician's free-text ``userComment`` is never stored: it may name a patient.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from hospital_mlops.ehr.cds_card import suggestion_uuid
from hospital_mlops.ehr.cds_config import Service
from hospital_mlops.ehr.cds_request import CdsRequestError
from hospital_mlops.ehr.issued_cards import IssuedCard, issued_card
from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.monitoring.feedback import (
    FeedbackRejected,
    check_response,
    check_time,
    record_response,
)

# the feedback store's field names → the spec's
FEEDBACK_FIELDS = {
    "prediction_id": ".card",
    "responded_at": ".outcomeTimestamp",
    "override_reason": ".overrideReason",
}
MAX_ITEMS = 100
# CDS Hooks lets an EHR add reasons of its own to the card's: such a choice is an override with
# a reason, recorded as this (its code is the EHR's, possibly free text: never stored)
EHR_OWN_REASON = "a reason of the EHR's own (not one the card offered)"


@dataclass(frozen=True)
class _Answer:
    card: IssuedCard
    response: str
    stamp: str
    reason: str | None


def record_cds_feedback(
    log: PredictionLog,
    service: Service,
    reasons: Mapping[str, str],
    reasons_system: str,
    body: Any,
    now: datetime | None = None,
    *,
    suggests: bool = False,
) -> dict[str, Any]:
    """The spec's feedback: checked whole first, then recorded (nothing half-written).
    ``reasons``: the cards' override reason codes (in ``reasons_system``) → the recorded
    display text; ``suggests``: the service's risk cards at the alert threshold carry a
    suggestion."""
    now = now or datetime.now(UTC)
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise CdsRequestError(400, [("feedback", "must be a non-empty list")])
    if len(items) > MAX_ITEMS:
        raise CdsRequestError(400, [("feedback", f"at most {MAX_ITEMS} items in one call")])
    answers, problems = [], []
    for n, item in enumerate(items):
        where = f"feedback[{n}]"
        found: list[tuple[str, str]] = []
        answer = _checked(log, item, where, (reasons, reasons_system, suggests), now, found)
        problems += found
        if answer is not None and not found:
            answers.append((where, answer))
    if problems:
        raise CdsRequestError(400, problems)
    recorded = replayed = 0
    for where, answer in answers:
        try:
            done = record_response(
                log,
                answer.card.uuid,
                _issued_at(answer.card),
                answer.response,
                answer.stamp,
                override_reason=answer.reason,
                source=f"cds-hooks:{service.id}"[:40],
                now=now,
                unknown="prediction_id: no card with this uuid was issued",
                card_kind=answer.card.kind,
            )
        except FeedbackRejected as exc:  # checked above: only a race could bring one here
            raise CdsRequestError(400, [(_spec_field(where, exc.field), exc.detail)]) from None
        except sa.exc.SQLAlchemyError:
            # the store failed part-way: what was recorded replays on the client's retry
            unavailable = [("store", "the feedback store is unavailable; retry the whole list")]
            raise CdsRequestError(503, unavailable) from None
        replayed += done.replayed
        recorded += not done.replayed
    return {"recorded": recorded, "replayed": replayed}


def _checked(
    log: PredictionLog,
    item: Any,
    where: str,
    offered: tuple[Mapping[str, str], str, bool],
    now: datetime,
    problems: list[tuple[str, str]],
) -> _Answer | None:
    """One item as the answer to record, every problem with it appended to ``problems``.
    ``offered``: the cards' override reasons, their system, and whether they suggest."""
    reasons, reasons_system, suggests = offered
    if not isinstance(item, dict):
        problems.append((where, "must be an object"))
        return None
    card_id, outcome, stamp = item.get("card"), item.get("outcome"), item.get("outcomeTimestamp")
    card = None
    if not isinstance(card_id, str) or not card_id:
        problems.append((f"{where}.card", "is required (the card's uuid)"))
    elif len(card_id) > 64:
        problems.append((f"{where}.card", "is not a card uuid (longer than 64 characters)"))
    else:
        try:
            card = issued_card(log, card_id)
        except sa.exc.SQLAlchemyError:
            unavailable = [("store", "the feedback store is unavailable; retry")]
            raise CdsRequestError(503, unavailable) from None
        if card is None:
            problems.append((f"{where}.card", "no card with this uuid was issued"))
    if outcome not in ("accepted", "overridden"):
        problems.append((f"{where}.outcome", "must be accepted or overridden"))
    if not isinstance(stamp, str):
        problems.append((f"{where}.outcomeTimestamp", "is required"))
    reason = _override_reason(item, outcome, where, reasons, reasons_system, problems)
    response = "overridden" if outcome == "overridden" else "acknowledged"
    if outcome == "accepted" and _accepted_suggestions(item, card, suggests, where, problems):
        response = "acted_on"  # the clinician took the card's suggestion
    try:
        allowed = (*reasons.values(), EHR_OWN_REASON)
        check_response(response, reason, allowed, reason_required=False)
        if isinstance(stamp, str):
            check_time(stamp, card.issued_at if card else None, now)
    except FeedbackRejected as exc:
        problems.append((_spec_field(where, exc.field), exc.detail))
    if card is None or not isinstance(stamp, str):
        return None
    return _Answer(card, response, stamp, reason)


def _override_reason(
    item: dict[str, Any],
    outcome: Any,
    where: str,
    reasons: Mapping[str, str],
    system: str,
    problems: list[tuple[str, str]],
) -> str | None:
    """The recorded reason: the display text of the card's reason the clinician chose,
    ``EHR_OWN_REASON`` for one the EHR added, or None when none was chosen (the spec makes
    ``overrideReason`` and its ``reason`` optional, but not an empty one)."""
    given = item.get("overrideReason")
    if given is None:
        return None
    if outcome != "overridden":
        problems.append((f"{where}.overrideReason", "is only for an overridden card"))
        return None
    if not isinstance(given, dict):
        problems.append((f"{where}.overrideReason", "must be an object"))
        return None
    coding, comment = given.get("reason"), given.get("userComment")
    if coding is None and comment is None:
        problems.append((f"{where}.overrideReason", "must hold a reason, a userComment or both"))
        return None
    if comment is not None and not isinstance(comment, str):
        problems.append((f"{where}.overrideReason.userComment", "must be a string"))
    if coding is None:
        return None  # a comment alone: the comment is not kept, so no reason is recorded
    code = coding.get("code") if isinstance(coding, dict) else None
    if not isinstance(code, str) or not code or not isinstance(coding.get("system"), str):
        problems.append((f"{where}.overrideReason.reason", "must be a Coding with system and code"))
        return None
    if coding["system"] == system and code in reasons:
        return reasons[code]
    return EHR_OWN_REASON


def _accepted_suggestions(
    item: dict[str, Any],
    card: IssuedCard | None,
    suggests: bool,
    where: str,
    problems: list[tuple[str, str]],
) -> bool:
    """Whether the clinician accepted the card's suggestion; any other id is refused. The
    spec asks for ``acceptedSuggestions`` on every accepted card; a card with no suggestion
    (most of ours) can only be acknowledged, so an accepted card without them is tolerated."""
    accepted = item.get("acceptedSuggestions")
    if accepted is None:
        return False
    field = f"{where}.acceptedSuggestions"
    if item.get("outcome") != "accepted":
        problems.append((field, "is only for an accepted card"))
        return False
    if not isinstance(accepted, list):
        problems.append((field, "must be a list"))
        return False
    offers = card is not None and card.kind == "risk" and card.alert and suggests
    offered = suggestion_uuid(card.uuid) if card is not None and offers else None
    for k, entry in enumerate(accepted):
        chosen = entry.get("id") if isinstance(entry, dict) else None
        if not isinstance(chosen, str):
            problems.append((f"{field}[{k}].id", "is required (the suggestion's uuid)"))
        elif card is not None and chosen != offered:
            problems.append((f"{field}[{k}].id", "is not a suggestion of this card"))
    return bool(accepted)


def _issued_at(card: IssuedCard) -> Callable[[sa.Connection], str | None]:
    def issued(_: sa.Connection) -> str | None:
        return card.issued_at  # issued cards are never changed or removed: read once, above

    return issued


def _spec_field(where: str, field: str) -> str:
    return f"{where}{FEEDBACK_FIELDS.get(field, '')}"
