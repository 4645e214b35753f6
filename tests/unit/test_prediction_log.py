"""The prediction log: every answer kept by prediction id, written off the request path.

Each test that writes or reads the log runs on SQLite and on PostgreSQL (``store_url``)."""

from __future__ import annotations

import os
import stat

import pytest
import sqlalchemy as sa

from hospital_mlops.inference.prediction_log import (
    PredictionLog,
    PredictionNotFound,
    ServedModel,
    default_url,
    records,
    sqlite_path,
)

SERVED = ServedModel("readmission-30d", 3, "a" * 64, "diabetes130@abc", "b" * 64, "diabetes130")


def _answer(i: int) -> dict:
    return {
        "prediction_id": f"00000000-0000-4000-8000-{i:012d}",
        "scored_at": "2026-11-28T12:00:00Z",
        "risk": 0.1 + i / 1000,
    }


def test_background_writes_are_all_kept_and_readable(store_url) -> None:
    log = PredictionLog(store_url)
    for batch in range(50):
        answers = [_answer(batch * 4 + j) for j in range(4)]
        instances = [{"age": "[70-80)", "n": j} for j in range(4)]
        log.append(records(f"req-{batch}", "v1", SERVED, instances, answers))
    log.flush()
    assert log.count() == 200
    row = log.get(_answer(37)["prediction_id"])
    assert row["request_id"] == "req-9" and row["model_version"] == 3
    assert row["inputs"] == {"age": "[70-80)", "n": 1} and row["answer"]["risk"] == 0.137
    assert row["model_sha256"] == "a" * 64 and row["features_sha256"] == "b" * 64
    log.close()
    # durable: a new process (a new engine) reads the same rows
    assert PredictionLog(store_url).count() == 200


def test_an_unknown_prediction_is_a_clear_error(store_url) -> None:
    log = PredictionLog(store_url)
    with pytest.raises(PredictionNotFound, match="no prediction 'nope'"):
        log.get("nope")


def test_a_duplicate_prediction_id_is_refused_not_overwritten(store_url) -> None:
    log = PredictionLog(store_url)
    rows = records("r", "v1", SERVED, [{}], [_answer(1)])
    log.write(rows)
    with pytest.raises(sa.exc.IntegrityError):
        log.write(rows)
    assert log.count() == 1


def test_the_local_log_is_owner_only(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HMLOPS_STATE_DIR", str(tmp_path))
    monkeypatch.delenv("HMLOPS_PREDICTION_LOG_URL", raising=False)
    path = sqlite_path(default_url())
    assert path == tmp_path / "predictions.sqlite"
    PredictionLog()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_failed_background_write_is_counted_and_logs_no_inputs(store_url, capfd) -> None:
    log = PredictionLog(store_url)
    patient = {"age": "[70-80)", "diag_1": "PATIENT-VALUE-428.0"}
    rows = records("r", "v1", SERVED, [patient], [_answer(1)])
    log.write(rows)
    log.append(rows)  # the same prediction id again: the database refuses it (in the writer)
    log.flush()
    assert log.failed_writes == 1 and log.count() == 1
    log.close()
    errors = capfd.readouterr().err  # the writer process logs to the server's stderr
    assert "prediction log write failed for 1 rows" in errors
    # SQLAlchemy quotes a failed statement's parameters unless told not to
    assert "PATIENT-VALUE" not in errors and "70-80" not in errors


def test_rows_are_written_by_another_process(store_url) -> None:
    log = PredictionLog(store_url)
    log.append(records("r", "v1", SERVED, [{}], [_answer(1)]))
    log.flush()
    writer = log._writer
    assert writer is not None and writer.pid != os.getpid()
    assert writer._process.poll() is None and log.count() == 1
    log.close()
    assert writer._process.poll() == 0  # stopped cleanly, not left behind


def test_if_the_writer_process_dies_rows_are_written_in_process(store_url) -> None:
    log = PredictionLog(store_url)
    log.append(records("r", "v1", SERVED, [{}], [_answer(1)]))
    log.flush()
    writer = log._writer
    assert writer is not None
    writer._process.kill()
    writer._process.wait(timeout=10)
    for i in range(2, 40):
        log.append(records(f"r{i}", "v1", SERVED, [{}], [_answer(i)]))
    log.flush()
    log.close()
    # the dead writer's pipe has no reader: the next send fails at once (EPIPE), and every row
    # from then on is written in the serving process
    assert not writer.alive
    assert PredictionLog(store_url).count() == 39


def test_inputs_and_answers_are_stored_as_sorted_key_json(store_url) -> None:
    """What orjson cannot encode (an integer beyond 64 bits) is still logged, not lost."""
    import json

    log = PredictionLog(store_url)
    plain = {"z": 1, "age": "[70-80)", "a": [2, 1], "name": "Zoë"}
    huge = {"n": 2**70, "age": "[50-60)"}
    log.append(records("r1", "v1", SERVED, [plain], [_answer(1)]))
    log.append(records("r2", "v1", SERVED, [huge], [_answer(2)]))
    log.flush()
    log.close()
    with log.engine.connect() as conn:
        stored = dict(conn.exec_driver_sql("SELECT request_id, inputs FROM predictions").all())
    assert json.loads(stored["r1"]) == plain and json.loads(stored["r2"]) == huge
    assert stored["r1"].index('"a"') < stored["r1"].index('"age"') < stored["r1"].index('"z"')
    assert stored["r2"] == json.dumps(huge, sort_keys=True)


def test_the_join_key_and_answer_are_columns(store_url) -> None:
    log = PredictionLog(store_url)
    instances = [{"age": "[70-80)", "encounter_token": "tok_0123456789abcdef"}, {"age": "[50-60)"}]
    answers = [dict(_answer(1), alert=True), dict(_answer(2), alert=False)]
    log.write(records("r", "v1", SERVED, instances, answers))
    first, second = log.get(answers[0]["prediction_id"]), log.get(answers[1]["prediction_id"])
    assert (first["encounter_token"], first["risk"], first["alert"]) == (
        "tok_0123456789abcdef",
        0.101,
        True,
    )
    assert (second["encounter_token"], second["alert"]) == (None, False)


def test_a_log_from_before_the_monitoring_columns_gets_them_filled(store_url) -> None:
    import json

    old = sa.create_engine(store_url)
    with old.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE predictions (prediction_id VARCHAR(36) PRIMARY KEY, request_id "
                "VARCHAR(128) NOT NULL, scored_at VARCHAR(40) NOT NULL, protocol VARCHAR(8) NOT "
                "NULL, model_name VARCHAR(200) NOT NULL, model_version INTEGER NOT NULL, "
                "model_sha256 VARCHAR(64) NOT NULL, feature_set_version VARCHAR(80) NOT NULL, "
                "features_sha256 VARCHAR(64) NOT NULL, source VARCHAR(80) NOT NULL, inputs TEXT "
                "NOT NULL, answer TEXT NOT NULL)"
            )
        )
        conn.execute(
            sa.text(
                "INSERT INTO predictions VALUES ('p1', 'r', 't', 'v1', 'm', 1, 'a', 'f', 'b', "
                "'s', :inputs, :answer)"
            ),
            {
                "inputs": json.dumps({"encounter_token": "tok_0123456789abcdef"}),
                "answer": json.dumps({"risk": 0.25, "alert": True}),
            },
        )
    old.dispose()
    row = PredictionLog(store_url).get("p1")
    assert (row["encounter_token"], row["risk"], row["alert"]) == (
        "tok_0123456789abcdef",
        0.25,
        True,
    )


def test_a_read_only_database_loses_rows_counted_at_once_not_at_the_next_flush(
    new_store_url,
) -> None:
    """A database that refuses writes (read-only here; full or gone alike): every row is
    counted as lost as soon as the writer fails it, so the server's counter (and its alert)
    does not wait for a flush."""
    import time

    url = new_store_url("p")
    PredictionLog(url).close()  # the tables exist
    log = PredictionLog(new_store_url.read_only(url))
    for i in range(5):
        log.append(records(f"r{i}", "v1", SERVED, [{}], [_answer(i)]))
    deadline = time.monotonic() + 10
    while log.failed_writes < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.failed_writes == 5  # no flush was asked for
    log.flush()
    assert log.failed_writes == 5 and PredictionLog(url).count() == 0
    log.close()


_REPLICA = """
import sys, time
from hospital_mlops.inference.prediction_log import PredictionLog, records
from tests.unit.test_prediction_log import SERVED, _answer
replica, url, start = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
while time.time() < start:  # imported: now open the database together
    pass
log = PredictionLog(url)
for batch in range(50):
    answers = [_answer(replica * 1000 + batch * 5 + j) for j in range(5)]
    log.append(records(f"rep{replica}-{batch}", "v1", SERVED, [{}] * 5, answers))
log.close()
print(log.failed_writes)
"""


def test_replicas_starting_together_on_a_new_database_lose_nothing(store_url) -> None:
    """Four serving processes (replicas, or a predictor and its shadow) open one empty database
    at the same moment and write at once: the tables are made once, every row lands."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    start = time.time() + 8  # after every replica has imported
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _REPLICA, str(i), store_url, str(start)],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    outputs = [replica.communicate(timeout=120) for replica in replicas]
    for replica, (out, err) in zip(replicas, outputs, strict=True):
        assert replica.returncode == 0, err[-2000:]
        assert out.strip() == "0", err[-2000:]
    assert PredictionLog(store_url).count() == 4 * 250


@pytest.mark.postgres
def test_a_database_server_restart_loses_no_row(tmp_path) -> None:
    """The database restarts under a running predictor (a failover, a minor upgrade): the
    writer process's pooled connection is dead, checked before the next batch and replaced;
    no row is lost."""
    from e2e.local_postgres import LocalPostgres, PostgresUnavailable
    from tests.stores import unavailable

    try:
        server = LocalPostgres(tmp_path / "pg").start()
    except PostgresUnavailable as exc:
        unavailable(str(exc))
    try:
        url = server.create_database("restart")
        log = PredictionLog(url)
        log.append(records("before", "v1", SERVED, [{}] * 5, [_answer(i) for i in range(5)]))
        log.flush()
        assert log.count() == 5
        server.restart()
        for i in range(5, 25):
            log.append(records(f"after-{i}", "v1", SERVED, [{}], [_answer(i)]))
        log.flush()
        assert log.failed_writes == 0 and log.count() == 25
        log.close()
    finally:
        server.stop()
