"""Workflow drift: clinicians' responses per window, "ignored" derived, alerts for clinical
operations. Simulated alerts with responses drawn at known rates."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd

from hospital_mlops.monitoring.alerts import alerts_for
from hospital_mlops.monitoring.windows import compute_windows
from hospital_mlops.monitoring.workflow import OTHER_REASON, workflow_of
from tests.unit.test_monitoring import BASELINE, POLICY, START, WEEK, _stream

FEEDBACK = timedelta(hours=POLICY.windows.feedback_hours)
NOW = START + 4 * WEEK  # long after the streams below: every alert's feedback window is closed


def _responses(
    stream: pd.DataFrame,
    seed: int,
    *,
    answered: float = 0.85,
    overridden: float = 0.2,
    reasons: tuple[str, ...] = POLICY.feedback.override_reasons[:2],
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    alerts = stream[stream["alert"]].reset_index(drop=True)
    n = len(alerts)
    responds = rng.random(n) < answered
    delay = pd.to_timedelta(rng.exponential(90, n), unit="m")
    kind = np.where(rng.random(n) < overridden, "overridden", "acted_on")
    return pd.DataFrame(
        {
            "scored_at": alerts["scored_at"],
            "response": np.where(responds, kind, None),
            "override_reason": np.where(
                responds & (kind == "overridden"), rng.choice(reasons, n), None
            ),
            "responded_at": (alerts["scored_at"] + delay).where(responds),
        }
    )


def test_ignored_is_derived_and_pending_is_not_ignored() -> None:
    t0 = pd.Timestamp("2026-01-01T08:00:00Z")
    alerts = pd.DataFrame(
        {
            "scored_at": [t0, t0, t0, t0 + pd.Timedelta(hours=30)],
            "response": ["acted_on", "overridden", None, None],
            "override_reason": [None, "already planned", None, None],
            "responded_at": [
                t0 + pd.Timedelta(minutes=30),
                t0 + pd.Timedelta(hours=2),
                pd.NaT,
                pd.NaT,
            ],
        }
    )
    now = (t0 + pd.Timedelta(hours=36)).to_pydatetime()
    work = workflow_of(alerts, FEEDBACK, now, ("already planned",))
    # the third alert's 24 h are over: ignored; the fourth's are not: pending
    assert (work.alerts_issued, work.ignored, work.pending, work.judged) == (4, 1, 1, 3)
    assert work.acknowledgement_rate == round(2 / 3, 6)
    assert work.override_rate == 0.5 and work.override_reasons == {"already planned": 1}
    # a reason outside the configured list is counted, never named
    assert workflow_of(alerts, FEEDBACK, now).override_reasons == {OTHER_REASON: 1}
    assert work.median_minutes_to_response == 75.0
    # a response after the feedback window counts as ignored, not as an answer
    late = alerts.assign(responded_at=alerts["responded_at"] + pd.Timedelta(hours=30))
    assert workflow_of(late, FEEDBACK, now).ignored == 3


def test_a_steady_workflow_raises_nothing() -> None:
    stream = _stream(3, 3000, 11)
    windows = compute_windows(stream, BASELINE, POLICY, responses=_responses(stream, 1), now=NOW)
    assert all(w.judged_alerts >= POLICY.windows.min_judged_alerts for w in windows)
    assert all(0.75 < w.acknowledgement_rate < 0.95 for w in windows)
    assert all(0.1 < w.override_rate < 0.3 for w in windows)
    assert alerts_for(windows, BASELINE, POLICY) == []


def test_overrides_rising_is_workflow_drift_for_clinical_operations() -> None:
    stream = _stream(2, 3000, 12)
    responses = _responses(stream, 2, overridden=0.7)
    windows = compute_windows(stream, BASELINE, POLICY, responses=responses, now=NOW)
    alerts = alerts_for(windows, BASELINE, POLICY)
    assert {(a.kind, a.owner) for a in alerts} == {("workflow", "clinical-operations")}
    reason = POLICY.feedback.override_reasons[0]
    assert all("overrode" in a.message and reason in a.message for a in alerts)


def test_alerts_being_ignored_is_workflow_drift() -> None:
    stream = _stream(2, 3000, 13)
    windows = compute_windows(
        stream, BASELINE, POLICY, responses=_responses(stream, 3, answered=0.3), now=NOW
    )
    messages = [a.message for a in alerts_for(windows, BASELINE, POLICY)]
    assert len(messages) == 2 and all("ignored" in m for m in messages)


def test_without_feedback_data_no_workflow_number_is_invented() -> None:
    windows = compute_windows(_stream(1, 3000, 14), BASELINE, POLICY, now=NOW)
    (w,) = windows
    assert w.acknowledgement_rate is None and w.override_rate is None
    assert w.median_minutes_to_response is None and w.alerts_issued > 0


def test_a_recent_window_is_pending_not_ignored() -> None:
    stream = _stream(1, 3000, 15)
    just_after = START + pd.Timedelta(hours=2)  # most alerts' feedback windows are still open
    windows = compute_windows(
        stream, BASELINE, POLICY, responses=_responses(stream, 4, answered=0.0), now=just_after
    )
    (w,) = windows
    assert w.pending > 0.9 * w.alerts_issued and w.ignored < 0.1 * w.alerts_issued
