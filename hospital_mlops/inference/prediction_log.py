"""The prediction log: every request and answer, keyed by prediction id, for audit and lineage.

Each row ties one answer to the exact model artifact (version, sha256, feature-set version) and
to the feature snapshot that model was trained on, so ``hmlops lineage <prediction-id>`` can walk
from a prediction at the bedside back to the source extract. Locally it is a SQLite file in the
state directory (created owner-only: it holds clinical inputs); on a cluster a SQLAlchemy URL
(``HMLOPS_PREDICTION_LOG_URL``, e.g. PostgreSQL) from a Secret.

Writes happen in a writer process, so scoring never waits on the disk and never shares its GIL
with the database driver: a writer *thread* handed the GIL back and forth row by row and added
~1 ms to the serving p99 (docs/serving.md). The serving process only serializes the rows and
writes them to a pipe; a full pipe blocks rather than drop a record. If the writer process dies,
rows are written in the serving process itself: slower, nothing lost.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import queue
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from hospital_mlops.paths import writable_state_dir
from hospital_mlops.store_schema import create_tables

LOG_URL_ENV = "HMLOPS_PREDICTION_LOG_URL"
BATCH_SECONDS = 0.05  # the writer coalesces what arrives within this into one transaction
MAX_BATCH_ROWS = 5000
_PIPE_BYTES = 1 << 20  # Linux default pipe-max-size: a slow commit does not block a request
_F_SETPIPE_SZ = 1031
_FLUSH, _STOP = b"\x00flush", b"\x00stop"
_LOST = b"lost:"  # the writer's unprompted notice: rows refused so far (cumulative)
log = logging.getLogger("hospital_mlops.inference.prediction_log")

_metadata = sa.MetaData()
predictions = sa.Table(
    "predictions",
    _metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("scored_at", sa.String(40), nullable=False),
    sa.Column("protocol", sa.String(8), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.Integer, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("feature_set_version", sa.String(80), nullable=False),
    sa.Column("features_sha256", sa.String(64), nullable=False),
    sa.Column("source", sa.String(80), nullable=False),
    sa.Column("inputs", sa.Text, nullable=False),  # the instance as received (JSON)
    sa.Column("answer", sa.Text, nullable=False),  # the answer as returned (JSON)
    # Copied out of the JSON for monitoring, which reads millions of rows: the join key to
    # outcomes and feedback (the ingest layer's token, when the client sent it), and the answer.
    sa.Column("encounter_token", sa.String(128), nullable=True, index=True),
    sa.Column("risk", sa.Float, nullable=True),
    sa.Column("alert", sa.Boolean, nullable=True),
)
_ADDED_COLUMNS = ("encounter_token", "risk", "alert")  # absent from logs written before them


class PredictionNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ServedModel:
    """What the log records about the model behind each answer."""

    name: str
    version: int
    sha256: str
    feature_set_version: str
    features_sha256: str
    source: str


def default_url() -> str:
    url = os.environ.get(LOG_URL_ENV)
    if url:
        return url
    path = writable_state_dir() / "predictions.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    return f"sqlite:///{path}"


def _add_missing_columns(conn: sa.Connection) -> None:
    """A log written by an earlier version lacks the monitoring columns: add them and fill
    them from the logged JSON, once."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    missing = [c for c in _ADDED_COLUMNS if c not in present]
    if not missing:
        return
    for name in missing:
        column = predictions.c[name]
        conn.execute(
            sa.text(
                f"ALTER TABLE predictions ADD COLUMN {name} "
                f"{column.type.compile(dialect=conn.dialect)}"
            )
        )
    rows = conn.execute(
        sa.select(predictions.c.prediction_id, predictions.c.inputs, predictions.c.answer)
    ).all()
    for prediction_id, inputs, answer in rows:
        conn.execute(
            predictions.update()
            .where(predictions.c.prediction_id == prediction_id)
            .values(_monitoring_columns(json.loads(inputs), json.loads(answer)))
        )
    log.info("prediction log: added %s to %d logged rows", ", ".join(missing), len(rows))


def _monitoring_columns(instance: Any, answer: dict[str, Any]) -> dict[str, Any]:
    token = instance.get("encounter_token") if isinstance(instance, dict) else None
    return {
        "encounter_token": token if isinstance(token, str) else None,
        "risk": answer.get("risk"),
        "alert": answer.get("alert"),
    }


def _engine(url: str) -> sa.Engine:
    # hide_parameters: a failed write's error must not carry the patient's inputs into a log.
    # pool_pre_ping: a database server restarted (a failover, an upgrade) leaves the writer's
    # pooled connection dead; checked before each batch, it costs a round trip, not the batch.
    server = not url.startswith("sqlite")
    engine = sa.create_engine(url, future=True, hide_parameters=True, pool_pre_ping=server)
    create_tables(engine, _metadata, migrate=_add_missing_columns)
    return engine


def _json_text(value: Any) -> str:
    """Sorted-key JSON. orjson, several times faster than ``json.dumps``, on the request's path (and
    what the writer process does per row is what competes with the next request for a core).
    What orjson refuses (an integer beyond 64 bits) takes ``json.dumps``, non-JSON as text."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(value, sort_keys=True, default=str)


def records(
    request_id: str,
    protocol: str,
    served: ServedModel,
    instances: list[Any],
    answers: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per answered instance."""
    return [
        {
            "prediction_id": answer["prediction_id"],
            "request_id": request_id,
            "scored_at": answer["scored_at"],
            "protocol": protocol,
            "model_name": served.name,
            "model_version": served.version,
            "model_sha256": served.sha256,
            "feature_set_version": served.feature_set_version,
            "features_sha256": served.features_sha256,
            "source": served.source,
            "inputs": _json_text(instance),
            "answer": _json_text(answer),
            **_monitoring_columns(instance, answer),
        }
        for instance, answer in zip(instances, answers, strict=True)
    ]


class _DriverInsert:
    """The insert compiled once for the database's driver, its rows passed straight to the
    driver's ``executemany``: less of the writer process's time per batch than a Core insert
    (which checks and converts every row), and that time competes with the serving
    process for the pod's cores. The columns are strings, numbers and booleans, which every
    DBAPI driver takes as they are. A column a row lacks is NULL, as with a Core insert."""

    def __init__(self, dialect: sa.Dialect) -> None:
        compiled = predictions.insert().compile(
            dialect=dialect, column_keys=[c.name for c in predictions.columns]
        )
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        self.keys = list(compiled.positiontup or []) if self.positional else list(compiled.params)

    def parameters(self, rows: list[dict[str, Any]]) -> list[Any]:
        if self.positional:
            return [tuple(row.get(key) for key in self.keys) for row in rows]
        return [{key: row.get(key) for key in self.keys} for row in rows]


class PredictionLog:
    """Append-only writes through a writer process; reads for lineage and audit."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _engine(self.url)
        self._insert = _DriverInsert(self.engine.dialect)
        self._writer: _WriterProcess | None = None
        self._lock = threading.Lock()
        self._failed_here = 0
        self._failed_in_writer = 0

    @property
    def failed_writes(self) -> int:
        """Rows the database refused, here or in the writer process (which says so as soon
        as a write fails): lost from the log, though every one of them was answered."""
        in_writer = self._writer.lost if self._writer is not None else 0
        return self._failed_here + max(self._failed_in_writer, in_writer)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Hand rows to the writer process (started on first use)."""
        with self._lock:
            if self._writer is None and _shared(self.url):
                self._writer = _WriterProcess(self.url)
                atexit.register(self.close)
            if self._writer is not None and self._writer.send(rows):
                return
        self._write_counting(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write rows now (tests, batch back-fills, the writer process)."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._insert.sql, self._insert.parameters(rows))

    def _write_counting(self, rows: list[dict[str, Any]]) -> None:
        try:
            self.write(rows)
        except sa.exc.SQLAlchemyError as exc:
            self._failed_here += len(rows)
            log.error("prediction log write failed for %d rows: %s", len(rows), exc)

    def flush(self) -> None:
        """Block until every appended row is written (or counted as failed)."""
        with self._lock:
            if self._writer is not None:
                self._failed_in_writer = self._writer.flush(self._failed_in_writer)

    def close(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._failed_in_writer = self._writer.close(self._failed_in_writer)
                self._writer = None
                atexit.unregister(self.close)
        self.engine.dispose()

    def get(self, prediction_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(predictions).where(predictions.c.prediction_id == prediction_id)
            ).first()
        if row is None:
            raise PredictionNotFound(f"no prediction {prediction_id!r} in the prediction log")
        out = dict(row._mapping)
        out["inputs"] = json.loads(out["inputs"])
        out["answer"] = json.loads(out["answer"])
        return out

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar() or 0
            )


def _shared(url: str) -> bool:
    """Whether another process can open the same database (not an in-memory SQLite one)."""
    return url not in ("sqlite://", "sqlite:///:memory:") and "mode=memory" not in url


class _WriterProcess:
    """``python -m hospital_mlops.inference.prediction_log --writer URL``: the process that owns the
    database writes. Its stdin carries length-prefixed messages (rows as JSON, a flush marker,
    a stop marker); its stdout answers each flush with the cumulative failure count, and
    announces each failed write as it happens (read by a thread here). A plain
    subprocess, not multiprocessing: nothing of the serving process is re-imported or copied."""

    def __init__(self, url: str) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "hospital_mlops.inference.prediction_log", "--writer", url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin
        self._acks: queue.Queue[bytes | None] = queue.Queue()
        self.lost = 0  # rows the database refused, as the writer announces them
        with contextlib.suppress(OSError):  # Linux only; elsewhere the default buffer
            fcntl.fcntl(self._stdin.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)
        self.alive = True
        frames = _Frames(self._process.stdout.fileno())
        threading.Thread(target=self._read, args=(frames,), daemon=True).start()

    def _read(self, frames: _Frames) -> None:
        while (message := frames.next(None)) is not None:
            if message.startswith(_LOST):
                self.lost = max(self.lost, int(message[len(_LOST) :]))
            else:
                self._acks.put(message)
        self._acks.put(None)  # end of pipe: the writer is gone

    @property
    def pid(self) -> int:
        return self._process.pid

    def _send(self, payload: bytes) -> None:
        self._stdin.write(struct.pack("<I", len(payload)) + payload)
        self._stdin.flush()

    def send(self, rows: list[dict[str, Any]]) -> bool:
        if not self.alive:
            return False
        try:
            self._send(orjson.dumps(rows))
        except (OSError, ValueError):  # broken pipe: the writer died
            self.alive = False
            log.error("the prediction log writer process stopped; writing in process")
            return False
        return True

    def flush(self, failed: int, timeout: float = 60.0) -> int:
        if not self.alive:
            return failed
        try:
            self._send(_FLUSH)
            answer = self._acks.get(timeout=timeout)
            if answer is not None:
                self.lost = max(self.lost, int(answer))
                return int(answer)
        except (OSError, ValueError, queue.Empty):
            pass
        self.alive = False
        log.error("the prediction log writer process did not answer a flush")
        return failed

    def close(self, failed: int) -> int:
        failed = self.flush(failed)
        with contextlib.suppress(OSError, ValueError):
            if self.alive:
                self._send(_STOP)
            self._stdin.close()
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self.alive = False
        return failed


class _Frames:
    """Length-prefixed messages read from a pipe, with a timeout."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = bytearray()
        self.closed = False

    def next(self, timeout: float | None) -> bytes | None:
        """The next message; None at end of pipe or if none arrives within ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if len(self.buffer) >= 4:
                (size,) = struct.unpack("<I", self.buffer[:4])
                if len(self.buffer) >= 4 + size:
                    message = bytes(self.buffer[4 : 4 + size])
                    del self.buffer[: 4 + size]
                    return message
            if self.closed:
                return None
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], wait)[0]:
                return None
            chunk = os.read(self.fd, 1 << 20)
            if not chunk:
                self.closed = True
            self.buffer.extend(chunk)


def _write_forever(url: str) -> None:
    """The writer process (stdin: messages; stdout: flush answers). It keeps reading while a
    batch lingers, so the serving process's sends do not wait; a batch is committed
    ``BATCH_SECONDS`` after its first row (one fsync per batch, not per request), at
    ``MAX_BATCH_ROWS``, or at once for a flush or stop. It stops on the stop marker or when the
    serving process is gone (end of pipe: everything it sent has been read)."""
    # Ctrl-C reaches the whole process group; the serving process drains and stops us itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    store = PredictionLog(url)
    frames = _Frames(sys.stdin.fileno())
    failed = 0
    stop = False
    while not stop:
        rows: list[dict[str, Any]] = []
        flushes = 0
        deadline: float | None = None
        while flushes == 0 and len(rows) < MAX_BATCH_ROWS:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                break
            message = frames.next(wait)
            if message is None:
                stop = frames.closed
                break
            if message == _FLUSH:
                flushes += 1
            elif message == _STOP:
                stop = True
                break
            else:
                rows.extend(orjson.loads(message))
                deadline = deadline or time.monotonic() + BATCH_SECONDS
        if rows:
            try:
                store.write(rows)
            except sa.exc.SQLAlchemyError as exc:
                failed += len(rows)
                log.error("prediction log write failed for %d rows: %s", len(rows), exc)
                # said at once, not at the next flush: the server's loss counter is live
                notice = _LOST + str(failed).encode()
                os.write(sys.stdout.fileno(), struct.pack("<I", len(notice)) + notice)
        for _ in range(flushes):
            answer = str(failed).encode()
            os.write(sys.stdout.fileno(), struct.pack("<I", len(answer)) + answer)
    store.engine.dispose()


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--writer":
        raise SystemExit("usage: python -m hospital_mlops.inference.prediction_log --writer URL")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    _write_forever(sys.argv[2])
