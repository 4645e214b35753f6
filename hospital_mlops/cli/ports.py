"""The one port rule every listening command shares."""

from __future__ import annotations


class PortUsageError(ValueError):
    """A port (or a span of consecutive ports) outside what an unprivileged server may bind."""


def check_port(port: int, span: int = 1) -> None:
    if not (port >= 1024 and port + span - 1 <= 65535):
        raise PortUsageError(f"ports must be within 1024–65535, not {port}..{port + span - 1}")
