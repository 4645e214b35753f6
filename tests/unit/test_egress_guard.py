"""The egress guard that the no-phone-home test relies on: in a guarded process every
non-loopback connect, datagram and lookup is refused and recorded; loopback still works; and
without the guard nothing is recorded (so an empty log means something only with the guard)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hospital_mlops.security.egress_guard import guard_env, is_local, processes_log, read_log

PROBE = textwrap.dedent(
    """
    import socket, urllib.request

    def raw_connect():
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(0.3)  # unguarded, an unroutable address must not hang the test
        sock.connect(("10.255.255.1", 443))

    results = []
    for attempt in (
        raw_connect,
        lambda: socket.getaddrinfo("telemetry.example.org", 443),
        lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.7", 53)),
        lambda: urllib.request.urlopen("http://198.51.100.9/", timeout=0.3),
    ):
        try:
            attempt()
            results.append("connected")
        except PermissionError as exc:
            results.append("blocked")
        except Exception as exc:  # urllib wraps the refusal; anything else is not the guard's
            wrapped = isinstance(getattr(exc, "reason", None), PermissionError)
            results.append("blocked" if wrapped else type(exc).__name__)
    server = socket.create_server(("127.0.0.1", 0))
    socket.create_connection(server.getsockname(), timeout=2).close()
    results.append("loopback ok")
    print(",".join(results))
    """
)


def _probe(env: dict[str, str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().split(",")


def test_a_guarded_process_is_refused_every_way_out_and_each_is_recorded(tmp_path: Path) -> None:
    log = tmp_path / "egress.jsonl"
    results = _probe(guard_env(log))
    assert results == ["blocked", "blocked", "blocked", "blocked", "loopback ok"]
    refused = read_log(log)
    assert [r["call"] for r in refused] == ["connect", "getaddrinfo", "sendto", "getaddrinfo"]
    assert "10.255.255.1" in refused[0]["target"] and refused[0]["stack"]
    assert "telemetry.example.org" in refused[1]["target"]
    # the process announced its guard: an empty refusal log is evidence only with this
    assert len(read_log(processes_log(log))) == 1


def test_without_the_guard_nothing_is_refused_or_recorded(tmp_path: Path) -> None:
    log = tmp_path / "egress.jsonl"
    env = guard_env(log)
    del env["HMLOPS_EGRESS_GUARD_LOG"]  # the protection removed
    results = _probe(env)
    assert "blocked" not in results and results[-1] == "loopback ok"
    assert read_log(log) == [] and read_log(processes_log(log)) == []


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True), ("::1", True), ("localhost", True), ("127.8.9.10", True),
        (None, True), ("0.0.0.0", True), (b"localhost", True),
        ("10.0.0.1", False), ("192.168.1.5", False), ("pypi.org", False),
        ("2001:db8::1", False), ("mlflow-telemetry.example", False),
    ],
)  # fmt: skip
def test_only_this_machine_counts_as_local(host: object, local: bool) -> None:
    assert is_local(host) is local
