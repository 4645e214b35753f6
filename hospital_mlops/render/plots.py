"""A matplotlib figure as inline SVG markup."""

from __future__ import annotations

import io
from typing import Any


def svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]
