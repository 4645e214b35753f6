"""The small-cell rule for published reports: a count of 1 to 10 patients or encounters is not
shown, and neither is anything that would give it back.

Primary suppression hides each small count. Complementary suppression hides one more count in
the same partition (the groups of one subgroup, which add up to a total printed elsewhere in
the report) whenever exactly one is hidden, so the hidden one cannot be recovered by
subtraction; the complement's rates stay, as they are computed on a large count. A row with a
small count also hides the rates computed on it (a sensitivity over 4 events gives the 4 back).
Zero is shown: it identifies no one.
"""

from __future__ import annotations

from collections.abc import Sequence

SMALL_CELL = 11
RULE = (
    f"Counts from 1 to {SMALL_CELL - 1} are shown as &lt;{SMALL_CELL} (the common small-cell "
    "rule), with the rates computed on them; where one count in a group of rows is hidden, the "
    "next smallest count is hidden too, so it cannot be worked out from the total."
)


def is_small(n: int | None) -> bool:
    return n is not None and 0 < n < SMALL_CELL


def count_html(n: int | None, hidden: bool = False) -> str:
    if n is None:
        return "—"
    return f"&lt;{SMALL_CELL}" if hidden or is_small(n) else f"{n:,}"


def count_text(n: int | None, hidden: bool = False) -> str:
    if n is None:
        return "—"
    return f"<{SMALL_CELL}" if hidden or is_small(n) else f"{n:,}"


def suppressed(counts: Sequence[int | None]) -> list[str]:
    """For each count of one partition: "small" (1 to 10: hidden with what is computed on it),
    "complement" (hidden so that a lone small one cannot be worked out from the total), or ""."""
    marks = ["small" if is_small(n) else "" for n in counts]
    if marks.count("small") == 1:
        shown = [(n, i) for i, n in enumerate(counts) if not marks[i] and n]
        if shown:
            marks[min(shown)[1]] = "complement"
    return marks


def suppressed_rows(rows: Sequence[dict], partition: str, *counts: str) -> list[str]:
    """Per row: "small" when any of its counts is small (hide its counts and its rates),
    "complement" when a count is hidden only to protect another row's (hide its counts), else
    "". Rows are grouped by ``partition`` (e.g. "subgroup"), each count column on its own."""
    marks = [""] * len(rows)
    groups: dict[object, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row.get(partition), []).append(i)
    for members in groups.values():
        for column in counts:
            for i, mark in zip(members, suppressed([rows[i].get(column) for i in members]),
                               strict=True):  # fmt: skip
                if mark == "small" or (mark == "complement" and not marks[i]):
                    marks[i] = mark
    return marks
