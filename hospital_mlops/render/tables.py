"""An HTML table. Header cells are escaped here; body cells arrive as markup, escaped by the
caller (so a cell may hold a link or a highlighted value)."""

from __future__ import annotations

import html

COMPACT_FROM = 8  # columns: from here a table's text is set smaller, to fit the page


def table(
    header: list[str],
    rows: list[list[str]],
    row_class: list[str] | None = None,
    css_class: str = "",
) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    css_class = css_class or ("compact" if len(header) >= COMPACT_FROM else "")
    opening = f'<table class="{css_class}">' if css_class else "<table>"
    return f'<div class="wide">{opening}<tr>{head}</tr>{"".join(body)}</table></div>'
