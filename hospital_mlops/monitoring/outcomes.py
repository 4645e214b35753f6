"""Outcomes arrive weeks after the prediction: join them to the logged predictions.

The join key is the encounter's token from the ingest layer (the request's optional
``encounter_token``, kept in the prediction log). An outcomes file is checked whole before
anything is written, and written in one transaction: a bad file changes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.model.scoring import TOKEN_PATTERN
from hospital_mlops.store_schema import create_tables

TOKEN, LABEL, RECORDED_AT = "encounter_token", "readmitted_30d", "recorded_at"
_LABELS: dict[object, bool] = {0: False, 1: True, "0": False, "1": True}  # True == 1

_metadata = sa.MetaData()
outcomes = sa.Table(
    "outcomes",
    _metadata,
    sa.Column("encounter_token", sa.String(128), primary_key=True),
    sa.Column("readmitted_30d", sa.Boolean, nullable=False),
    sa.Column("recorded_at", sa.String(40), nullable=True),  # when the outcome was known
    sa.Column("ingested_at", sa.String(40), nullable=False),
    sa.Column("source_sha256", sa.String(64), nullable=False),  # the file it came from
)


class OutcomesRejected(ValueError):
    """The outcomes file is not ingestible; nothing was written."""


@dataclass(frozen=True)
class OutcomesIngested:
    rows: int
    new: int
    already_known: int  # the same outcome ingested before (a re-sent file): skipped
    predictions_joined: int
    source_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def outcomes_table(log: PredictionLog) -> sa.Table:
    create_tables(log.engine, _metadata)
    return outcomes


def read_outcomes(path: Path) -> tuple[pd.DataFrame, str]:
    """A CSV or Parquet file with ``encounter_token`` and ``readmitted_30d`` (0/1), optionally
    ``recorded_at``; and its sha256."""
    if not path.is_file():
        raise OutcomesRejected(f"{path}: no such file")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={TOKEN: str, RECORDED_AT: str}, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise OutcomesRejected(f"{path}: not a readable CSV/Parquet file ({exc})") from None
    return frame, digest


def _checked(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    missing = [c for c in (TOKEN, LABEL) if c not in frame.columns]
    if missing:
        raise OutcomesRejected(f"{source}: missing column(s) {', '.join(missing)}")
    extra = sorted(set(frame.columns) - {TOKEN, LABEL, RECORDED_AT})
    if extra:
        raise OutcomesRejected(f"{source}: unexpected column(s) {', '.join(extra[:5])}")
    if frame.empty:
        raise OutcomesRejected(f"{source}: no rows")
    problems: list[str] = []
    tokens = frame[TOKEN].astype(str)
    bad_tokens = ~tokens.map(lambda t: bool(TOKEN_PATTERN.fullmatch(t)))
    if bad_tokens.any():
        rows = [int(i) + 2 for i in frame.index[bad_tokens][:3]]  # +2: header, 1-based
        problems.append(
            f"{int(bad_tokens.sum())} row(s) whose {TOKEN} is not a token from the ingest layer "
            f"(rows {rows}); raw identifiers are refused"
        )
    labels = frame[LABEL].map(lambda v: _LABELS.get(v) if not pd.isna(v) else None)
    bad_labels = labels.isna()
    if bad_labels.any():
        seen = sorted({str(v) for v in frame.loc[bad_labels, LABEL]})[:3]
        problems.append(f"{int(bad_labels.sum())} row(s) whose {LABEL} is not 0 or 1: {seen}")
    duplicated = tokens.duplicated(keep=False)
    if duplicated.any():
        problems.append(
            f"{int(tokens[duplicated].nunique())} encounter token(s) appear more than once"
        )
    recorded = frame[RECORDED_AT].astype(str) if RECORDED_AT in frame.columns else None
    if recorded is not None:
        parsed = pd.to_datetime(recorded.replace("", None), utc=True, errors="coerce")
        bad_times = parsed.isna() & (recorded != "")
        if bad_times.any():
            problems.append(f"{int(bad_times.sum())} row(s) whose {RECORDED_AT} is not ISO 8601")
    if problems:
        raise OutcomesRejected(f"{source}: " + "; ".join(problems))
    out = pd.DataFrame({TOKEN: tokens, LABEL: labels.astype(bool)})
    out[RECORDED_AT] = recorded.replace("", None) if recorded is not None else None
    return out


def ingest_outcomes(
    log: PredictionLog, frame: pd.DataFrame, source_sha256: str, source: str = "outcomes"
) -> OutcomesIngested:
    """Check the whole file, then write it in one transaction. Refused, with nothing written:
    malformed rows, duplicate tokens, tokens with no logged prediction, and an outcome that
    contradicts one ingested before."""
    checked = _checked(frame, source)
    try:
        return _ingest(log, checked, source_sha256, source)
    except sa.exc.IntegrityError:
        # another ingest wrote some of these encounters between our read and our insert: read
        # again, so they are checked against what it wrote (agreeing ones are then not new)
        return _ingest(log, checked, source_sha256, source)


def _ingest(
    log: PredictionLog, checked: pd.DataFrame, source_sha256: str, source: str
) -> OutcomesIngested:
    table = outcomes_table(log)
    tokens = checked[TOKEN].tolist()
    with log.engine.begin() as conn:
        logged = _existing(conn, predictions.c.encounter_token, tokens)
        unknown = [t for t in tokens if t not in logged]
        if unknown:
            raise OutcomesRejected(
                f"{source}: {len(unknown)} outcome(s) for encounters with no logged prediction "
                f"(e.g. {', '.join(unknown[:3])}); nothing was ingested"
            )
        known: dict[str, bool] = {}
        for chunk in _chunks(tokens):
            query = sa.select(table.c.encounter_token, table.c.readmitted_30d)
            known.update(conn.execute(query.where(table.c.encounter_token.in_(chunk))).all())
        labels = dict(zip(tokens, checked[LABEL].tolist(), strict=True))
        conflicts = [t for t, label in known.items() if bool(label) != labels[t]]
        if conflicts:
            raise OutcomesRejected(
                f"{source}: {len(conflicts)} outcome(s) contradict ones ingested before "
                f"(e.g. {', '.join(conflicts[:3])}); correct them explicitly, nothing was ingested"
            )
        now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        new_rows = [
            {
                TOKEN: row[TOKEN],
                LABEL: bool(row[LABEL]),
                RECORDED_AT: row[RECORDED_AT],
                "ingested_at": now,
                "source_sha256": source_sha256,
            }
            for row in checked.to_dict("records")
            if row[TOKEN] not in known
        ]
        if new_rows:
            conn.execute(table.insert(), new_rows)
        joined = sum(
            conn.execute(
                sa.select(sa.func.count())
                .select_from(predictions)
                .where(predictions.c.encounter_token.in_(chunk))
            ).scalar_one()
            for chunk in _chunks(tokens)
        )
    return OutcomesIngested(len(checked), len(new_rows), len(known), int(joined), source_sha256)


def _chunks(values: list[str], size: int = 500) -> list[list[str]]:
    """Bounded IN lists (SQLite's variable limit)."""
    return [values[i : i + size] for i in range(0, len(values), size)]


def _existing(conn: sa.Connection, column: sa.Column[Any], values: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(values):
        found.update(conn.execute(sa.select(column).where(column.in_(chunk)).distinct()).scalars())
    return found
