"""A PostgreSQL server for a benchmark whose data outlives one run: the project's throw-away
server (e2e/local_postgres.py) with its data directory and password kept in the work
directory, so a 10-million-row log is built once and measured many times, warm or cold."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from e2e.local_postgres import LocalPostgres  # noqa: E402

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _password(work: Path) -> str:
    path = work / "postgres.password"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(18))
        path.chmod(0o600)
    return path.read_text().strip()


@contextlib.contextmanager
def bench_server(work: Path) -> Iterator[LocalPostgres]:
    subprocess.run([str(ROOT / "e2e" / "install-postgres.sh")], check=True)
    server = LocalPostgres(work / "postgres", password=_password(work)).start()
    try:
        yield server
    finally:
        server.stop()


def has_database(server: LocalPostgres, name: str) -> bool:
    import psycopg

    with psycopg.connect(
        host="127.0.0.1",
        port=server.port,
        user="hmlops",
        password=server.password,
        dbname="postgres",
    ) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            is not None
        )


def drop_os_caches() -> bool:
    """Written pages to disk, then the kernel's page cache emptied, so the measured read starts
    from the disk. Needs root; False where the kernel refuses (the run is then only a server
    restart, and says so)."""
    os.sync()
    try:
        DROP_CACHES.write_text("3\n")
    except OSError:
        return False
    return True
