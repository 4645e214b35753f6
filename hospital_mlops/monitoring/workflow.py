"""The clinicians' workflow on one window's alerts: answered, overridden (with the configured
reason, or "other"), pending inside the feedback window, or ignored (derived, never recorded).
Pure: a frame of alerted predictions in, a ``Workflow`` out.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd


@dataclass(frozen=True)
class Workflow:
    alerts_issued: int
    pending: int
    ignored: int
    acknowledgement_rate: float | None
    override_rate: float | None
    override_reasons: dict[str, int]
    median_minutes_to_response: float | None
    judged: int


OTHER_REASON = "other (not a configured reason)"
NO_REASON = "no reason given"  # CDS Hooks lets a clinician override without choosing one


def workflow_of(
    alerts: pd.DataFrame,
    feedback_window: timedelta,
    now: datetime,
    configured_reasons: tuple[str, ...] = (),
) -> Workflow:
    """``alerts``: the window's alerted predictions with ``scored_at``, ``response``,
    ``override_reason``, ``responded_at`` (``monitoring.feedback.responses``: the first answer's
    time, the latest answer's content). A response after the feedback window counts as
    ignored (the alert did its job late or not at all); an alert still inside its window is
    pending, not ignored. Reasons outside ``configured_reasons`` are counted as one "other",
    never named: free text could carry a patient's details into alerts and reports."""
    closes = alerts["scored_at"] + pd.Timedelta(feedback_window)
    responded_at = alerts["responded_at"]
    in_time = alerts["response"].notna() & (responded_at <= closes)
    closed = closes <= pd.Timestamp(now)
    pending = int((~in_time & ~closed).sum())
    ignored = int((~in_time & closed).sum())
    responded = alerts[in_time]
    judged = len(responded) + ignored
    overridden = responded[responded["response"] == "overridden"]
    minutes = (responded["responded_at"] - responded["scored_at"]).dt.total_seconds() / 60
    given = overridden["override_reason"]
    named = given.where(given.isin(configured_reasons), OTHER_REASON).where(
        given.notna(), NO_REASON
    )
    reasons = named.value_counts().sort_index()
    return Workflow(
        alerts_issued=len(alerts),
        pending=pending,
        ignored=ignored,
        acknowledgement_rate=round(len(responded) / judged, 6) if judged else None,
        override_rate=round(len(overridden) / len(responded), 6) if len(responded) else None,
        override_reasons={str(k): int(v) for k, v in reasons.items()},
        median_minutes_to_response=round(float(minutes.median()), 2) if len(responded) else None,
        judged=judged,
    )
