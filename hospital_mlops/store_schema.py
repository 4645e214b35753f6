"""Tables made once, when several processes open a new database at the same moment.

A predictor's replicas, its writer process, the detector and the feedback API all start against
the same empty database on a rollout. SQLAlchemy's ``create_all`` checks for a table, then
creates it; between the two another process may create it, and the loser fails its start
("relation already exists" or a ``pg_type`` unique violation on PostgreSQL, "table already
exists" on SQLite). On PostgreSQL the check-and-create (and any column migration) runs under a
transaction-scoped advisory lock, so the processes take turns; SQLite has no such lock, so a
start that lost the race checks again (the table is there by then).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import sqlalchemy as sa

# pg_advisory_xact_lock's key: any bigint the database's other users do not take
_SCHEMA_LOCK = 0x686D6C6F7073  # "hmlops"
_SQLITE_ATTEMPTS = 5

Migration = Callable[[sa.Connection], None]
# what each engine has made already: the feedback and outcome doors ask on every request
_made: weakref.WeakKeyDictionary[sa.Engine, set[int]] = weakref.WeakKeyDictionary()


def create_tables(
    engine: sa.Engine, metadata: sa.MetaData, migrate: Migration | None = None
) -> None:
    """``metadata``'s tables, then ``migrate`` (which must be idempotent), made once."""
    made = _made.setdefault(engine, set())
    if id(metadata) in made:
        return
    _create(engine, metadata, migrate)
    made.add(id(metadata))


def _create(engine: sa.Engine, metadata: sa.MetaData, migrate: Migration | None) -> None:
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_SCHEMA_LOCK)))
            metadata.create_all(conn)
            if migrate is not None:
                migrate(conn)
        return
    for attempt in range(_SQLITE_ATTEMPTS):
        try:
            with engine.begin() as conn:
                metadata.create_all(conn)
                if migrate is not None:
                    migrate(conn)
            return
        except sa.exc.OperationalError as exc:
            lost_the_race = "already exists" in str(exc) or "duplicate column" in str(exc)
            if not lost_the_race or attempt == _SQLITE_ATTEMPTS - 1:
                raise
