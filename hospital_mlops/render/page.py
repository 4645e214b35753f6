"""The one page shell every HTML report uses, and the reports' shared style.

Every page is one self-contained document: inline CSS, no script, no external asset, so it opens
the same in an air-gapped network, attached to a ticket or printed for a review board. A page
that needs more style passes its own; the shell is the same.
"""

from __future__ import annotations

import html

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;
margin:2em auto;color:#1d2733;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccd;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f1f3f7}.pass{color:#11643a;font-weight:600}
.fail{color:#a1161b;font-weight:600}.note{color:#555;font-size:.92em}.flag{background:#fff1f0}
code{background:#f4f4f6;padding:0 .2em}
"""

# Every page, whatever its own style: nothing makes the page scroll sideways. Cell text wraps
# at spaces, and a long code-like value (a hash, a test id) anywhere; a table still wider than
# the page scrolls inside its own box; a plot shrinks to the page. A table of many narrow
# columns is "compact".
LAYOUT = """
td,th{overflow-wrap:break-word}td code,td .token{overflow-wrap:anywhere}
.wide{max-width:100%;overflow-x:auto}table.compact{font-size:.86em}
table.compact td,table.compact th{padding:.25em .35em}
svg{max-width:100%;height:auto}details>summary{cursor:pointer;margin:.4em 0}
"""


def page(title: str, body: str, style: str = STYLE) -> str:
    """A whole HTML document around ``body`` (already-escaped HTML); ``title`` is plain text."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}{LAYOUT}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
