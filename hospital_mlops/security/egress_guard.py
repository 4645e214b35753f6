"""A process-wide socket guard: any connection, datagram or name lookup that would leave this
machine is refused and recorded, so a security reviewer can run the whole system and see that
nothing phones home.

Every Python process started with ``HMLOPS_EGRESS_GUARD_LOG`` set and ``sitecustomize`` from
:data:`SITE_DIR` on ``PYTHONPATH`` installs the guard before any other import (kfp.local's
component subprocesses and the local KServe servers included). Each refusal appends one JSON
line (process, target, the calling frames) to the log, and the call fails with
:class:`EgressBlocked`, so a library that swallows the error is still caught by the log.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

LOG_ENV = "HMLOPS_EGRESS_GUARD_LOG"
SITE_DIR = Path(__file__).resolve().parents[1] / "_egress_site"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}


class EgressBlocked(PermissionError):
    """A network call to somewhere other than this machine, refused by the guard."""


def is_local(host: object) -> bool:
    """True for loopback addresses and names, the machine's own name, and Unix sockets."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    text = str(host).strip("[]").lower()
    if text in _LOCAL_NAMES or text in _own_names():
        return True
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    # 0.0.0.0 / :: as a *destination* mean this host on Linux
    return address.is_loopback or address.is_unspecified


def _own_names() -> set[str]:
    name = socket.gethostname().lower()
    return {name, name.split(".")[0]}


def guard_env(log: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment that installs the guard in every Python process started with it."""
    env = dict(os.environ if env is None else env)
    env[LOG_ENV] = str(log)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SITE_DIR), env.get("PYTHONPATH")) if p)
    return env


def processes_log(log: Path) -> Path:
    return log.with_name(log.name + ".processes")


def read_log(log: Path) -> list[dict[str, Any]]:
    """The refusals recorded in ``log`` (or, given :func:`processes_log`, the guarded
    processes)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def install(log: Path) -> None:
    """Refuse and record every non-local connect, sendto and lookup in this process."""
    if getattr(socket, "_hmlops_egress_guard", False):
        return
    # every guarded process says so, so a test can tell "nothing was blocked" from "no guard"
    with processes_log(log).open("a") as handle:
        handle.write(json.dumps({"pid": os.getpid(), "argv": sys.orig_argv[1:6]}) + "\n")
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_getaddrinfo = socket.getaddrinfo
    original_gethostbyname = socket.gethostbyname

    def refuse(call: str, target: object) -> EgressBlocked:
        record = {
            "pid": os.getpid(),
            "argv": sys.orig_argv[1:6],
            "call": call,
            "target": repr(target)[:200],
            "stack": [
                f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[-8:-2]
            ],
        }
        with log.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        return EgressBlocked(f"hospital-mlops egress guard: {call} to {target!r} refused")

    def host_of(address: object) -> object:
        return address[0] if isinstance(address, tuple) and address else None

    def connect(self: socket.socket, address: Any) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(host_of(address)):
            raise refuse("connect", address)
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(host_of(address)):
            raise refuse("connect_ex", address)
        return original_connect_ex(self, address)

    def sendto(self: socket.socket, data: Any, *args: Any) -> int:
        address = args[-1] if args else None
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_local(host_of(address)):
            raise refuse("sendto", address)
        return original_sendto(self, data, *args)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_local(host):
            raise refuse("getaddrinfo", host)
        return original_getaddrinfo(host, *args, **kwargs)

    def gethostbyname(host: str) -> str:
        if not is_local(host):
            raise refuse("gethostbyname", host)
        return original_gethostbyname(host)

    socket.socket.connect = connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign,assignment]
    socket.socket.sendto = sendto  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = getaddrinfo
    socket.gethostbyname = gethostbyname
    socket._hmlops_egress_guard = True  # type: ignore[attr-defined]


def install_from_env() -> None:
    log = os.environ.get(LOG_ENV)
    if log:
        install(Path(log))
