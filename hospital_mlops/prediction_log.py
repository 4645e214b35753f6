"""The prediction log: every request and answer, keyed by prediction id, for audit and lineage.

Each row ties one answer to the exact model artifact (version, sha256, feature-set version) and
to the feature snapshot that model was trained on, so ``hmlops lineage <prediction-id>`` can walk
from a prediction at the bedside back to the source extract. Locally it is a SQLite file in the
state directory (created owner-only: it holds clinical inputs); on a cluster a SQLAlchemy URL
(``HMLOPS_PREDICTION_LOG_URL``, e.g. PostgreSQL) from a Secret.

Writes go through a background thread so scoring latency never waits on the disk; the queue is
unbounded only in principle — ``put`` blocks past ``MAX_PENDING`` rather than dropping a record.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hospital_mlops.paths import state_dir

LOG_URL_ENV = "HMLOPS_PREDICTION_LOG_URL"
MAX_PENDING = 10_000
BATCH_SECONDS = 0.05
log = logging.getLogger("hospital_mlops.prediction_log")

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
)


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
    path = state_dir() / "predictions.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.touch(mode=0o600)
    return f"sqlite:///{path}"


def _engine(url: str) -> sa.Engine:
    # hide_parameters: a failed write's error must not carry the patient's inputs into a log.
    engine = sa.create_engine(url, future=True, hide_parameters=True)
    _metadata.create_all(engine)
    return engine


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
            "inputs": json.dumps(instance, sort_keys=True, default=str),
            "answer": json.dumps(answer, sort_keys=True),
        }
        for instance, answer in zip(instances, answers, strict=True)
    ]


class PredictionLog:
    """Append-only writes in the background; reads for lineage and audit."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url or default_url()
        self.engine = _engine(self.url)
        self._queue: queue.Queue[list[dict[str, Any]] | None] = queue.Queue(MAX_PENDING)
        self._writer: threading.Thread | None = None
        self.failed_writes = 0

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Queue rows for writing; starts the writer on first use."""
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_loop, daemon=True)
            self._writer.start()
        self._queue.put(rows)

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Write rows now (tests, batch back-fills)."""
        with self.engine.begin() as conn:
            conn.execute(predictions.insert(), rows)

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            items = [self._queue.get()]
            # Let a burst accumulate: one commit per ~50 ms instead of one per request keeps
            # the disk's fsync cost off the scoring threads' CPU.
            time.sleep(BATCH_SECONDS)
            # Coalesce whatever else is waiting: one transaction, far fewer fsyncs.
            while len(items) < 1000:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is None for item in items)
            batch = [row for item in items if item is not None for row in item]
            try:
                if batch:
                    self.write(batch)
            except sa.exc.SQLAlchemyError as exc:
                self.failed_writes += len(batch)
                log.error("prediction log write failed for %d rows: %s", len(batch), exc)
            finally:
                for _ in items:
                    self._queue.task_done()

    def flush(self) -> None:
        """Block until every queued row is written."""
        if self._writer is not None:
            self._queue.join()

    def close(self) -> None:
        if self._writer is not None:
            self._queue.put(None)
            self._writer.join(timeout=30)
            self._writer = None
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


def sqlite_path(url: str) -> Path | None:
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
