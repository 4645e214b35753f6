"""What ``hmlops`` returns: the exit codes its commands share, and the usage error any command
raises for a problem with what the user asked for (one line on stderr, exit 2)."""

from __future__ import annotations

EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class UsageError(RuntimeError):
    """A problem with what the user asked for; printed as one line, exit 2."""
