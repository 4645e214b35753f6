"""CDS Hooks feedback (the spec's ``/feedback``): each item checked against the card's override
reasons, all of them before any is recorded, then written to the prediction log's feedback.
A clinician's free-text ``userComment`` is never stored: it may name a patient.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hospital_mlops.ehr.cds_config import Service
from hospital_mlops.ehr.cds_request import CdsRequestError
from hospital_mlops.inference.prediction_log import PredictionLog
from hospital_mlops.monitoring.feedback import FeedbackRejected, record_feedback

# the feedback store's field names → the spec's
FEEDBACK_FIELDS = {
    "prediction_id": ".card",
    "responded_at": ".outcomeTimestamp",
    "override_reason": ".overrideReason",
}


def record_cds_feedback(
    log: PredictionLog, service: Service, reasons: Mapping[str, str], body: Any
) -> dict[str, Any]:
    """The spec's feedback: checked whole first, then recorded (nothing half-written)."""
    items = body.get("feedback") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items:
        raise CdsRequestError(400, [("feedback", "must be a non-empty list")])
    parsed, problems = [], []
    for n, item in enumerate(items):
        where = f"feedback[{n}]"
        if not isinstance(item, dict):
            problems.append((where, "must be an object"))
            continue
        card, outcome = item.get("card"), item.get("outcome")
        stamp = item.get("outcomeTimestamp")
        if not isinstance(card, str) or not card:
            problems.append((f"{where}.card", "is required (the card's uuid)"))
        if outcome not in ("accepted", "overridden"):
            problems.append((f"{where}.outcome", "must be accepted or overridden"))
        if not isinstance(stamp, str):
            problems.append((f"{where}.outcomeTimestamp", "is required"))
        reason = None
        if outcome == "overridden":
            code = ((item.get("overrideReason") or {}).get("reason") or {}).get("code")
            if code not in reasons:
                problems.append(
                    (f"{where}.overrideReason.reason.code", "is not one of the card's reasons")
                )
            reason = reasons.get(str(code))
        # userComment is free text a clinician typed: never stored (it may name a patient)
        parsed.append((where, str(card), str(outcome), str(stamp), reason))
    if problems:
        raise CdsRequestError(400, problems)
    recorded = []
    for where, card, outcome, stamp, reason in parsed:
        try:
            done = record_feedback(
                log,
                card,
                "overridden" if outcome == "overridden" else "acknowledged",
                stamp,
                override_reason=reason,
                allowed_reasons=tuple(reasons.values()),
                source=f"cds-hooks:{service.id}"[:40],
            )
        except FeedbackRejected as exc:
            status = 409 if exc.kind == "duplicate" else 400
            detail = exc.detail
            if exc.kind == "unknown_prediction":
                detail = "no card with this uuid was issued"
            spec_field = FEEDBACK_FIELDS.get(exc.field, "")
            raise CdsRequestError(status, [(f"{where}{spec_field}", detail)]) from None
        recorded.append(done.feedback_id)
    return {"recorded": len(recorded)}
