"""Plain text as table-cell markup that never widens a page: escaped, with each long unbroken
word (a hash, a file path, a test id) marked as a token the page shell lets wrap anywhere."""

from __future__ import annotations

import html

LONG_WORD = 24  # characters: longer words may break anywhere


def breakable(text: str) -> str:
    return " ".join(
        f'<span class="token">{html.escape(word)}</span>'
        if len(word) > LONG_WORD
        else html.escape(word)
        for word in str(text).split(" ")
    )
