"""A matplotlib figure as inline SVG markup, named for a screen reader."""

from __future__ import annotations

import html
import io
from typing import Any


def svg(fig: Any, title: str) -> str:
    """``title``: what the plot shows, in words (the SVG's ``<title>`` and accessible name)."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    opening = text.index(">") + 1
    name = html.escape(title, quote=True)
    return (
        f'{text[: opening - 1]} role="img" aria-label="{name}">'
        f"<title>{html.escape(title)}</title>{text[opening:]}"
    )
