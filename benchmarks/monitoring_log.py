"""The monitoring benchmark's prediction log: N predictions over ten weekly windows with
calibrated simulated risks and outcomes for 70% of them, written through the real tables
(``prediction_log.predictions``, ``monitoring.outcomes``) on SQLite or PostgreSQL.

Each logged request has a real request's fields and size (a bundled example's) and its
encounter's token, varied in the fields the break-downs read, so the JSON extraction is measured
on realistic rows: every request distinct, as in a real log (a database may not cache its way
through six hundred distinct requests).
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.monitoring.outcomes import outcomes_table

WEEKS = 10
MODEL, VERSION = "readmission-30d", 1
CHUNK = 100_000
RACES = ["Caucasian", "AfricanAmerican", "Hispanic", "Asian", "Other"]
SEXES = ["Female", "Male"]
AGES = [f"[{d}-{d + 10})" for d in range(0, 100, 10)]
SOURCES = [1, 2, 4, 6, 7, 17]
# encounter_token: a real client sends its encounter's token, so no two requests are the same
VARIED = ("race", "gender", "age", "admission_source_id", "encounter_token")


def risks(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.beta(1.6, 11.0, size=n), 0.005, 0.95)


class RequestText:
    """``json.dumps(template | varied, sort_keys=True)`` without a dumps of the whole request
    per row: the template is serialized once around placeholders and only the varied values
    are encoded (ten million dumps of a 1 kB request take minutes)."""

    def __init__(self) -> None:
        from hospital_mlops.features.diabetes130_stream import example_instances

        self.template = example_instances((80_000, 80_100), n=1, seed=0)[0]
        marked = json.dumps(self.template | {f: f"@@{f}@@" for f in VARIED}, sort_keys=True)
        pieces = re.split(r'"@@(\w+)@@"', marked)
        self.literals, self.fields = pieces[0::2], pieces[1::2]

    def render(self, columns: dict[str, list[Any]]) -> list[str]:
        encoded = {f: [json.dumps(v) for v in columns[f]] for f in self.fields}
        out = []
        for row in zip(*(encoded[f] for f in self.fields), strict=True):
            parts = [self.literals[0]]
            for value, literal in zip(row, self.literals[1:], strict=True):
                parts += [value, literal]
            out.append("".join(parts))
        return out

    def reference(self, columns: dict[str, list[Any]], i: int) -> str:
        return json.dumps(self.template | {f: columns[f][i] for f in VARIED}, sort_keys=True)


@dataclass(frozen=True)
class Chunk:
    predictions: pa.Table
    outcomes: pa.Table


def chunks(n: int, seed: int = 0) -> Iterator[Chunk]:
    """The log in chunks of the two tables' rows, the same rows for either backend."""
    text = RequestText()
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-01", tz="UTC").value // 10**9
    for offset in range(0, n, CHUNK):
        m = min(CHUNK, n - offset)
        risk = risks(rng, m)
        seconds = start + rng.integers(0, WEEKS * 7 * 86400, size=m)
        when = pd.to_datetime(seconds, unit="s", utc=True).strftime("%Y-%m-%dT%H:%M:%SZ")
        token_text = [f"enc{offset + i:020d}" for i in range(m)]
        varied = {
            "encounter_token": token_text,
            "race": rng.choice(RACES, m).tolist(),
            "gender": rng.choice(SEXES, m).tolist(),
            "age": rng.choice(AGES, m).tolist(),
            "admission_source_id": [int(s) for s in rng.choice(SOURCES, m)],
        }
        inputs = text.render(varied)
        if offset == 0:  # the shortcut must write exactly what json.dumps would
            assert inputs[0] == text.reference(varied, 0), "RequestText drifted from json.dumps"
        tokens = pa.array(token_text)
        ids = [f"00000000-0000-4000-8000-{offset + i:012d}" for i in range(m)]
        rows = pa.table(
            {
                "prediction_id": ids,
                "request_id": ["bench"] * m,
                "scored_at": list(when),
                "protocol": ["v1"] * m,
                "model_name": [MODEL] * m,
                "model_version": pa.array(np.full(m, VERSION, dtype="int32")),
                "model_sha256": ["0" * 64] * m,
                "feature_set_version": ["bench"] * m,
                "features_sha256": ["0" * 64] * m,
                "source": ["bench"] * m,
                "inputs": inputs,
                "answer": ["{}"] * m,
                "encounter_token": tokens,
                "risk": risk,
                "alert": risk >= 0.19,
            }
        )
        known = rng.random(m) < 0.7
        outcome = rng.random(m) < risk
        kept = np.flatnonzero(known)
        outcomes = pa.table(
            {
                "encounter_token": tokens.take(kept),
                "readmitted_30d": outcome[kept],
                "recorded_at": pa.nulls(len(kept), pa.string()),
                "ingested_at": ["2026-03-01T00:00:00Z"] * len(kept),
                "source_sha256": ["0" * 64] * len(kept),
            }
        )
        yield Chunk(rows, outcomes)


def build_log(url: str, n: int, seed: int = 0) -> None:
    log = PredictionLog(url)
    table = outcomes_table(log)
    try:
        if log.engine.dialect.name == "postgresql":
            _copy_in(log, n, seed)
            return
        with log.engine.begin() as conn:
            for chunk in chunks(n, seed):
                conn.execute(predictions.insert(), chunk.predictions.to_pylist())
                conn.execute(table.insert(), chunk.outcomes.to_pylist())
    finally:
        log.close()


def _csv(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(include_header=False))
    return sink.getvalue()


def _copy_in(log: PredictionLog, n: int, seed: int) -> None:
    """PostgreSQL's bulk path: ten million single-row inserts would take the better part of an
    hour, COPY minutes. The tables (with their indexes) are the product's."""
    with log.engine.begin() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            for chunk in chunks(n, seed):
                for name, rows in (
                    ("predictions", chunk.predictions),
                    ("outcomes", chunk.outcomes),
                ):
                    columns = ", ".join(rows.column_names)
                    with cur.copy(f"COPY {name} ({columns}) FROM STDIN (FORMAT csv)") as copy:
                        copy.write(_csv(rows))
        conn.exec_driver_sql("ANALYZE predictions")
        conn.exec_driver_sql("ANALYZE outcomes")
