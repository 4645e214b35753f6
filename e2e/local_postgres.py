"""A throw-away PostgreSQL server for the tests, the benchmarks and the end-to-end harness.

Debian's ``postgresql`` package, run by hand: ``initdb`` into a temporary data directory, then
``pg_ctl start`` on a free port, as the unprivileged ``postgres`` user when we are root (the
server refuses to run as root). Password authentication (scram-sha-256) on TCP only, as on a
cluster, so every URL carries credentials the way the ``hmlops-prediction-log`` Secret does.
Each caller gets databases of its own from :meth:`LocalPostgres.create_database`.

Nothing here is part of the product; it stands in for the hospital's managed PostgreSQL.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUPERUSER = "hmlops"
_SERVER_USER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine (``apt-get install postgresql``)."""


def server_bindir() -> Path:
    """Where ``initdb`` and ``pg_ctl`` live: Debian keeps them out of PATH, per major version."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    if not versions:
        raise PostgresUnavailable(
            "PostgreSQL's server is not installed (initdb not found): apt-get install postgresql"
        )
    return Path(versions[-1]).parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalPostgres:
    """One server. ``listen`` may add addresses beyond loopback (the podman bridge's gateway,
    so containers reach it as they would a database Service)."""

    root: Path
    port: int = 0
    listen: tuple[str, ...] = ("127.0.0.1",)
    clients: tuple[str, ...] = ()  # CIDRs beyond loopback allowed in (password auth)
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    _as_user: list[str] = field(default_factory=list, init=False)
    _databases: int = field(default=0, init=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str, host: str = "127.0.0.1") -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{host}:{self.port}/{database}"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}\n{tail}"
            )
        return proc

    def start(self) -> LocalPostgres:
        bindir = server_bindir()
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            # the server refuses root: its files and process belong to the postgres user
            try:
                pwd.getpwnam(_SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(f"no {_SERVER_USER!r} user to run it as") from None
            self._as_user = ["runuser", "-u", _SERVER_USER, "--"]
            shutil.chown(self.root, _SERVER_USER, _SERVER_USER)
            for parent in self.root.parents:  # the server must reach its own directory
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    parent.chmod(mode | 0o001)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_user:
            shutil.chown(pwfile, _SERVER_USER, _SERVER_USER)
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                str(bindir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--pwfile",
                str(pwfile),
                "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        pwfile.unlink()
        self._allow_clients()
        self.port = self.port or free_port()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={','.join(self.listen)} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(
            str(bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def _allow_clients(self) -> None:
        """pg_hba.conf lets in the given networks too (initdb allows only loopback), with the
        same password authentication as loopback."""
        hba = self.data_dir / "pg_hba.conf"
        text = hba.read_text()
        lines = [f"host all all {cidr} scram-sha-256" for cidr in self.clients]
        missing = [line for line in lines if line not in text.splitlines()]
        if missing:
            hba.write_text(text.rstrip("\n") + "\n" + "\n".join(missing) + "\n")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run(
                    str(server_bindir() / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"
                )

    def restart(self) -> None:
        """Stop (fast: every session is disconnected) and start again on the same port."""
        self.stop()
        self.start()

    def execute(self, sql: str, database: str = "postgres") -> None:
        """One statement outside a transaction (CREATE DATABASE cannot run inside one)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=SUPERUSER,
            password=self.password,
            dbname=database,
            autocommit=True,
        ) as conn:
            conn.execute(sql.encode())

    def create_database(self, prefix: str = "t") -> str:
        """A new, empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def make_read_only(self, url: str) -> None:
        """Every later transaction in the database refuses writes (a failing store)."""
        name = url.rsplit("/", 1)[1]
        self.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')


@contextlib.contextmanager
def running_postgres(
    root: Path | None = None,
    listen: tuple[str, ...] = ("127.0.0.1",),
    clients: tuple[str, ...] = (),
) -> Iterator[LocalPostgres]:
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hmlops-pg-")))
        server = LocalPostgres(root, listen=listen, clients=clients).start()
        try:
            yield server
        finally:
            server.stop()
