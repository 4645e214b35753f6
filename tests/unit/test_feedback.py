"""Clinicians' responses recorded against the prediction id; every bad one refused by name."""

from __future__ import annotations

import queue
from datetime import UTC, datetime

import pandas as pd
import pytest

from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.monitoring.feedback import (
    FeedbackRecorded,
    FeedbackRejected,
    feedback_history,
    feedback_table,
    record_feedback,
    recorded_feedback,
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


def test_a_different_second_answer_is_a_later_assessment_and_the_latest_counts(log) -> None:
    first = record_feedback(log, "p0", "acknowledged", "2026-01-02T11:00:00Z", now=NOW)
    later = record_feedback(
        log, "p0", "overridden", "2026-01-02T12:05:00Z", override_reason="x", now=NOW
    )
    assert (first.assessment, later.assessment) == (1, 2)
    assert not later.replayed and later.feedback_id != first.feedback_id
    history = feedback_history(log, "p0")
    assert [h["response"] for h in history] == ["acknowledged", "overridden"]
    assert recorded_feedback(log, "p0")["assessments"] == 2
    frame = responses(log, "readmission-30d", 1).set_index("prediction_id")
    # the latest answer's content, the first answer's time
    assert frame.loc["p0", "response"] == "overridden"
    assert frame.loc["p0", "override_reason"] == "x"
    assert frame.loc["p0", "responded_at"] == pd.Timestamp("2026-01-02T11:00:00Z")
    assert frame.loc["p0", "assessments"] == 2 and frame.loc["p2", "assessments"] == 0


def test_the_clinicians_order_not_the_arrival_order_makes_an_answer_the_latest(log) -> None:
    record_feedback(log, "p0", "acted_on", "2026-01-02T12:00:00Z", now=NOW)
    record_feedback(  # sent late by a queue: answered before the other
        log, "p0", "overridden", "2026-01-02T11:00:00Z", override_reason="x", now=NOW
    )
    frame = responses(log, "readmission-30d", 1).set_index("prediction_id")
    assert frame.loc["p0", "response"] == "acted_on"
    assert frame.loc["p0", "responded_at"] == pd.Timestamp("2026-01-02T11:00:00Z")


def test_the_same_answer_again_is_a_replay_not_counted_twice(log) -> None:
    first = record_feedback(log, "p0", "acknowledged", "2026-01-02T11:00:00+00:00", now=NOW)
    again = record_feedback(log, "p0", "acknowledged", "2026-01-02T12:00:00+01:00", now=NOW)
    assert again.replayed and again.feedback_id == first.feedback_id and again.assessment == 1
    assert len(feedback_history(log, "p0")) == 1


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


def test_simultaneous_answers_to_one_alert_are_numbered_or_replayed_never_an_error(log) -> None:
    """A retried request arriving with its original: one answer is recorded, the others are
    replays. Different answers at the same moment each get their own number."""
    from tests.stores import simultaneously

    for prediction_id in ("p0", "p1"):
        outcomes = simultaneously(
            6, lambda pid=prediction_id: record_feedback(log, pid, "acknowledged", NOW_TEXT)
        )
        assert all(isinstance(o, FeedbackRecorded) for o in outcomes), outcomes
        assert sorted(o.replayed for o in outcomes) == [False] + [True] * 5, outcomes
    stamps: queue.SimpleQueue[str] = queue.SimpleQueue()
    for k in range(4):
        stamps.put(f"2026-01-02T11:0{k}:00Z")
    outcomes = simultaneously(
        4, lambda: record_feedback(log, "p2", "acknowledged", stamps.get_nowait())
    )
    assert sorted(o.assessment for o in outcomes) == [1, 2, 3, 4], outcomes


def test_a_store_written_before_assessments_is_migrated_once(new_store_url) -> None:
    """An old store: one row per prediction under a unique prediction id. Its rows become
    first assessments and a second answer is then accepted."""
    url = new_store_url("old")
    log = _opened_after_old_rows(url, "feedback")
    later = record_feedback(log, "p0", "overridden", NOW_TEXT, override_reason="y", now=NOW)
    assert later.assessment == 2
    assert [h["response"] for h in feedback_history(log, "p0")] == ["acknowledged", "overridden"]
    again = PredictionLog(url)  # another process opening the migrated store: nothing changes
    assert [h["assessment"] for h in feedback_history(again, "p0")] == [1, 2]


def test_rows_a_crashed_sqlite_rebuild_left_behind_are_taken_in(tmp_path) -> None:
    """A rebuild that died after renaming the old table: the next start finds the new, empty
    table beside the old one and takes the old rows in (after any answered since)."""
    import sqlalchemy as sa

    log = _opened_after_old_rows(
        f"sqlite:///{tmp_path / 'x.sqlite'}", "feedback_before_assessments"
    )
    with log.engine.connect() as conn:
        assert "feedback_before_assessments" not in sa.inspect(conn).get_table_names()


def _opened_after_old_rows(url: str, table: str) -> PredictionLog:
    """A store holding one answer in the old shape under ``table``, opened, with its
    prediction logged: that answer must be the prediction's first assessment."""
    import sqlalchemy as sa

    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text(OLD_FEEDBACK_TABLE.replace("TABLE feedback", f"TABLE {table}")))
        conn.execute(
            sa.text(
                f"INSERT INTO {table} VALUES ('f1', 'p0', 'acknowledged', NULL, "
                "'2026-01-02T11:00:00Z', '2026-01-02T11:00:01Z', 'api')"
            )
        )
    log = PredictionLog(url)
    answers = [{"prediction_id": "p0", "scored_at": "2026-01-02T10:00:00Z", "alert": True}]
    log.write(records("r", "v1", SERVED, [{}], answers))
    (kept,) = feedback_history(log, "p0")
    assert (kept["feedback_id"], kept["assessment"]) == ("f1", 1)
    return log


# the feedback table as the store before repeated answers were kept wrote it
OLD_FEEDBACK_TABLE = """CREATE TABLE feedback (
    feedback_id VARCHAR(36) NOT NULL, prediction_id VARCHAR(36) NOT NULL,
    response VARCHAR(16) NOT NULL, override_reason VARCHAR(200),
    responded_at VARCHAR(40) NOT NULL, recorded_at VARCHAR(40) NOT NULL,
    source VARCHAR(40) NOT NULL, PRIMARY KEY (feedback_id), UNIQUE (prediction_id))"""
