"""The monitored version's logged predictions joined to their outcomes, with the request fields
the break-downs read, as one frame: the input of every monitoring run.

A cluster's log holds tens of millions of rows. On PostgreSQL the server takes the wanted fields
out of each request (parsed once for all of them) and the rows stream out through
``COPY … TO STDOUT`` into Arrow, without a Python object per value; the outcomes are joined in
Arrow. SQLite (a laptop's log) joins and extracts in SQL through SQLAlchemy. Both end in the
same conversion, so the frames are the same.
"""

from __future__ import annotations

import contextlib
import io
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSON

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.monitoring.breakdowns import json_field, request_fields
from hospital_mlops.monitoring.outcomes import outcomes_table

_BASE = {"scored_at": pa.string(), "risk": pa.float64(), "alert": pa.bool_(), "outcome": pa.bool_()}


def logged_predictions(
    log: PredictionLog, model: str, version: int, groups: dict[str, str] | None = None
) -> pd.DataFrame:
    """``scored_at`` (UTC), ``risk``, ``alert``, ``outcome`` (NaN until known) per prediction
    of one registered version; and per ``groups`` entry (name → request field) that field as
    the request sent it, as text (categorical; missing where the request did not send it)."""
    groups = groups or {}
    if log.engine.dialect.name == "postgresql":
        table = _read_postgres(log, model, version, groups)
    else:
        table = _fetch(log, _generic_query(log, model, version, groups), groups)
    return _frame(table, groups)


def _where(query: sa.Select[Any], model: str, version: int) -> sa.Select[Any]:
    p = predictions
    return query.where(p.c.model_name == model, p.c.model_version == version, p.c.risk.is_not(None))


def _joined(log: PredictionLog) -> tuple[sa.Join, list[sa.ColumnElement[Any]]]:
    p, o = predictions, outcomes_table(log)
    columns: list[sa.ColumnElement[Any]] = [
        p.c.scored_at,
        p.c.risk,
        p.c.alert,
        o.c.readmitted_30d.label("outcome"),
    ]
    return p.outerjoin(o, p.c.encounter_token == o.c.encounter_token), columns


def _generic_query(
    log: PredictionLog, model: str, version: int, groups: dict[str, str]
) -> sa.Select[Any]:
    source, columns = _joined(log)
    extra = [
        json_field(log.engine, predictions.c.inputs, field).label(name)
        for name, field in groups.items()
    ]
    return _where(sa.select(*columns, *extra).select_from(source), model, version)


_STREAMS = 2


def _postgres_query(groups: dict[str, str], model: str, version: int) -> sa.Select[Any]:
    """One ``json_to_record`` per row reads every wanted field in one pass over the request;
    ``->>`` per field parses the request once per field."""
    p = predictions
    columns: list[sa.ColumnElement[Any]] = [p.c.scored_at, p.c.risk, p.c.alert, p.c.encounter_token]
    fields = request_fields(groups)
    if not fields:
        return _where(sa.select(*columns), model, version)
    # json_to_record fails on anything but an object, where ->> gave NULL: a request logged
    # as a list or a scalar must not stop the run, so it reads as an object without fields.
    # The prefix test settles nearly every row; ltrim would copy every request.
    is_object = sa.or_(p.c.inputs.like("{%"), p.c.inputs.regexp_match(r"^[ \t\r\n]*\{"))
    as_object = sa.case((is_object, p.c.inputs), else_="{}")
    request = (
        sa.func.json_to_record(sa.cast(as_object, JSON))
        .table_valued(*(sa.column(field, sa.Text) for field in fields))
        .render_derived(name="request", with_types=True)
    )
    extra = [request.c[field].label(name) for name, field in groups.items()]
    return _where(
        sa.select(*columns, *extra).select_from(p.join(request, sa.true())), model, version
    )


def _block_range(query: sa.Select[Any], low: int, high: int | None) -> sa.Select[Any]:
    """The rows stored in blocks [low, high) of the table (PostgreSQL 14+ reads only those
    blocks; an older server filters, and stays correct)."""
    query = query.where(
        sa.text("predictions.ctid >= CAST(:low AS tid)").bindparams(low=f"({low},0)")
    )
    if high is None:  # open-ended: blocks added since the size was read are read too
        return query
    return query.where(
        sa.text("predictions.ctid < CAST(:high AS tid)").bindparams(high=f"({high},0)")
    )


def _copy(
    raw: Any, query: sa.Select[Any], schema: dict[str, pa.DataType], dialect: sa.Dialect
) -> pa.Table:
    import psycopg

    compiled = query.compile(dialect=dialect)
    sql = psycopg.ClientCursor(raw).mogrify(str(compiled), compiled.params)
    buffer = io.BytesIO()
    with raw.cursor() as cursor, cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        for block in copy:
            buffer.write(block)
    if buffer.tell() == 0:
        return pa.table({name: pa.array([], kind) for name, kind in schema.items()})
    return pacsv.read_csv(
        pa.py_buffer(buffer.getbuffer()),
        read_options=pacsv.ReadOptions(column_names=list(schema)),
        # a request field may hold a newline, inside quotes
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema,
            true_values=["t"],
            false_values=["f"],
            # COPY's CSV writes NULL unquoted and an empty string as "": keep them apart
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )


def _read_postgres(
    log: PredictionLog, model: str, version: int, groups: dict[str, str]
) -> pa.Table:
    """Parsing the requests is the read's cost, and one server process parses one row at a
    time: the table is read in ``_STREAMS`` block ranges on as many connections at once, all
    in one snapshot (exported by the first, as pg_dump's parallel jobs do), so the rows are
    those of one moment. The outcomes are joined here, in Arrow: a join in the server keeps
    the predictions in one process (merge join) or spills them to disk (hash join)."""
    from psycopg import sql as pgsql
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.psycopg.dialect()
    outcomes = outcomes_table(log)  # made here when no outcome was ever ingested, as in SQL
    query = _postgres_query(groups, model, version)
    schema = _BASE | {"encounter_token": pa.string()} | {name: pa.string() for name in groups}
    del schema["outcome"]
    outcome_schema = {"encounter_token": pa.string(), "outcome": pa.bool_()}
    known = sa.select(outcomes.c.encounter_token, outcomes.c.readmitted_30d.label("outcome"))
    with contextlib.ExitStack() as stack:
        connections = []
        for _ in range(_STREAMS + 1):  # and one for the outcomes, read meanwhile
            conn = stack.enter_context(log.engine.connect())
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
            raw = conn.connection.driver_connection
            assert raw is not None
            connections.append(raw)
        snapshot, blocks = (
            connections[0]
            .execute(
                "SELECT pg_export_snapshot(), pg_relation_size('predictions') / "
                "current_setting('block_size')::int"
            )
            .fetchone()
        )
        for raw in connections[1:]:
            raw.execute(pgsql.SQL("SET TRANSACTION SNAPSHOT {}").format(pgsql.Literal(snapshot)))
        bounds = [blocks * k // _STREAMS for k in range(_STREAMS)] + [None]
        jobs = [(_block_range(query, bounds[k], bounds[k + 1]), schema) for k in range(_STREAMS)]
        jobs.append((known, outcome_schema))
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            *parts, outcome_rows = pool.map(
                lambda job: _copy(job[0], job[1][0], job[1][1], dialect),
                zip(connections, jobs, strict=True),
            )
    rows = pa.concat_tables(parts)
    joined = rows.join(outcome_rows, keys="encounter_token", join_type="left outer")
    return joined.select(list(_BASE) + list(groups))


def _fetch(log: PredictionLog, query: sa.Select[Any], groups: dict[str, str]) -> pa.Table:
    with log.engine.connect() as conn:
        rows = conn.execute(query).all()
    schema = _BASE | {name: pa.string() for name in groups}
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.table(
        {
            name: pa.array(
                [None if v is None else bool(v) for v in values] if kind == pa.bool_() else values,
                kind,
            )
            for (name, kind), values in zip(schema.items(), columns, strict=True)
        }
    )


def _scored_at(text: pa.ChunkedArray) -> pd.Series:
    try:
        parsed = pc.cast(text, pa.timestamp("ns", "UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # what Arrow's ISO 8601 parser refuses (no offset, a space for the T) pandas reads
        return pd.to_datetime(text.to_pandas(), utc=True, format="ISO8601")
    return parsed.to_pandas()


def _frame(table: pa.Table, groups: dict[str, str]) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "scored_at": _scored_at(table["scored_at"]),
            "risk": table["risk"].to_numpy().astype("float64"),
            "alert": table["alert"].fill_null(False).to_numpy(),
            "outcome": table["outcome"].cast(pa.float64()).to_numpy(zero_copy_only=False),
        }
    )
    for name in groups:
        # categories in sorted order, not order of arrival: the same frame whatever order the
        # database returned the rows in
        column = table[name].dictionary_encode().to_pandas()
        frame[name] = column.cat.reorder_categories(sorted(column.cat.categories))
    return frame
