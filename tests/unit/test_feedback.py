"""Clinicians' responses recorded against the prediction id; every bad one refused by name."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.feedback import (
    FeedbackRecorded,
    FeedbackRejected,
    feedback_table,
    record_feedback,
    responses,
)

SERVED = ServedModel("readmission-30d", 1, "a" * 64, "fs", "b" * 64, "diabetes130")
NOW = datetime(2026, 1, 3, 12, 0, tzinfo=UTC)
NOW_TEXT = "2026-01-02T11:00:00Z"  # a response time after every logged prediction


@pytest.fixture
def log(store_url: str) -> PredictionLog:
    log = PredictionLog(store_url)
    answers = [
        {"prediction_id": f"p{i}", "scored_at": "2026-01-02T10:00:00Z", "risk": 0.3, "alert": i < 3}
        for i in range(4)
    ]
    log.write(records("r", "v1", SERVED, [{} for _ in answers], answers))
    return log


def test_a_response_is_recorded_and_joins_its_alert(log) -> None:
    done = record_feedback(log, "p0", "acted_on", "2026-01-02T11:30:00+01:00", now=NOW)
    assert done.responded_at == "2026-01-02T10:30:00Z"  # stored in UTC
    record_feedback(
        log, "p1", "overridden", "2026-01-02T11:00:00Z", override_reason="already planned", now=NOW
    )
    frame = responses(log, "readmission-30d", 1).set_index("prediction_id")
    assert sorted(frame.index) == ["p0", "p1", "p2"]  # alerted predictions only
    assert frame.loc["p1", "response"] == "overridden"
    assert frame.loc["p1", "override_reason"] == "already planned"
    assert frame["response"].isna().tolist() == [False, False, True]


def test_clock_skew_within_five_minutes_is_tolerated_and_reported(log) -> None:
    done = record_feedback(log, "p0", "acknowledged", "2026-01-02T09:57:00Z", now=NOW)
    assert done.clock_skew_seconds == 180.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prediction_id": "nope"}, "no prediction 'nope'"),
        ({"response": "ignored"}, "must be one of acknowledged, acted_on, overridden"),
        ({"response": "overridden"}, "override_reason: required"),
        ({"override_reason": "why not"}, "only an overridden alert"),
        ({"responded_at": "2026-01-02T09:00:00Z"}, "before the prediction was made"),
        ({"responded_at": "2026-01-04T09:00:00Z"}, "in the future"),
        ({"responded_at": "2026-01-02T11:00:00"}, "UTC offset"),
        ({"responded_at": "after lunch"}, "not an ISO 8601 time"),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(log, kwargs, message) -> None:
    call = {"prediction_id": "p0", "response": "acknowledged", "responded_at": "2026-01-02T11:00Z"}
    call.update(kwargs)
    reason = call.pop("override_reason", None)
    with pytest.raises(FeedbackRejected, match=message):
        record_feedback(log, **call, override_reason=reason, now=NOW)
    with log.engine.connect() as conn:
        assert conn.execute(feedback_table(log).select()).all() == []  # nothing written


def test_a_second_response_is_a_duplicate_not_an_overwrite(log) -> None:
    record_feedback(log, "p0", "acknowledged", "2026-01-02T11:00:00Z", now=NOW)
    with pytest.raises(FeedbackRejected, match="already recorded"):
        record_feedback(
            log, "p0", "overridden", "2026-01-02T11:05:00Z", override_reason="x", now=NOW
        )
    frame = responses(log, "readmission-30d", 1).set_index("prediction_id")
    assert frame.loc["p0", "response"] == "acknowledged"


def test_override_reasons_can_be_held_to_a_configured_list(log) -> None:
    allowed = ("already planned", "patient declined")
    with pytest.raises(FeedbackRejected, match="configured reasons"):
        record_feedback(
            log,
            "p0",
            "overridden",
            "2026-01-02T11:00:00Z",
            override_reason="free text",
            allowed_reasons=allowed,
            now=NOW,
        )
    record_feedback(
        log,
        "p0",
        "overridden",
        "2026-01-02T11:00:00Z",
        override_reason="patient declined",
        allowed_reasons=allowed,
        now=NOW,
    )


def test_simultaneous_responses_to_one_alert_record_one_and_refuse_the_rest(log) -> None:
    """Two clinicians (or a retried request) answering one alert at the same moment: one
    response is recorded, each other is a duplicate, never a store error."""
    from tests.stores import simultaneously

    for prediction_id in ("p0", "p1", "p2"):
        outcomes = simultaneously(
            6, lambda pid=prediction_id: record_feedback(log, pid, "acknowledged", NOW_TEXT)
        )
        kinds = [o.kind if isinstance(o, FeedbackRejected) else o for o in outcomes]
        assert kinds.count("duplicate") == 5, outcomes
        assert sum(isinstance(o, FeedbackRecorded) for o in outcomes) == 1, outcomes
