"""Shared clinical groupings: ICD-9 and ICD-10 diagnosis groups, and a per-category mapping."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

ICD9_GROUPS = (
    "circulatory",
    "respiratory",
    "digestive",
    "diabetes",
    "injury",
    "musculoskeletal",
    "genitourinary",
    "neoplasms",
    "other",
    "missing",
)


# (group, [low, high) code range, whole code number); where rules overlap the later one wins.
_ICD9_RULES: tuple[tuple[str, tuple[int, int] | None, int | None], ...] = (
    ("circulatory", (390, 460), 785),
    ("respiratory", (460, 520), 786),
    ("digestive", (520, 580), 787),
    ("diabetes", None, 250),
    ("injury", (800, 1000), None),
    ("musculoskeletal", (710, 740), None),
    ("genitourinary", (580, 630), 788),
    ("neoplasms", (140, 240), None),
)
# What the row-wise path parses itself: short plain decimals, where Python's float() and
# pandas' to_numeric agree exactly. Anything else goes through ``icd9_group``.
_PLAIN_ICD9_NUMBER = re.compile(r"[0-9]{1,6}(?:\.[0-9]{0,6})?")


def icd9_group(codes: pd.Series) -> pd.Series:
    """Strack et al. (2014) diagnosis groups from ICD-9-CM codes."""
    text = codes.astype("string")
    numeric = pd.to_numeric(text.where(~text.str.match(r"^[VE]", na=False)), errors="coerce")
    out = pd.Series("other", index=codes.index, dtype=object)
    whole_code = numeric.floordiv(1)
    for group, span, whole in _ICD9_RULES:
        parts = [] if span is None else [(numeric >= span[0]) & (numeric < span[1])]
        parts += [] if whole is None else [whole_code == whole]
        mask = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        out[mask.fillna(False).to_numpy(dtype=bool)] = group
    out[text.isna().to_numpy()] = "missing"
    return out


def icd9_group_of(code: str | None) -> str:
    """``icd9_group`` of one code, without pandas for the codes a hospital actually sends."""
    if code is None:
        return "missing"
    if code.startswith(("V", "E")):
        return "other"
    if _PLAIN_ICD9_NUMBER.fullmatch(code) is None:
        return str(icd9_group(pd.Series([code], dtype=object)).iloc[0])
    number = float(code)
    group = "other"
    for name, span, whole in _ICD9_RULES:
        if (span is not None and span[0] <= number < span[1]) or (
            whole is not None and math.floor(number) == whole
        ):
            group = name
    return group


ICD10_GROUPS = (
    "circulatory",
    "respiratory",
    "digestive",
    "endocrine",
    "injury",
    "musculoskeletal",
    "genitourinary",
    "neoplasms",
    "infection",
    "other",
    "missing",
)
_ICD10_CHAPTERS = {
    "I": "circulatory",
    "J": "respiratory",
    "K": "digestive",
    "E": "endocrine",
    "S": "injury",
    "T": "injury",
    "M": "musculoskeletal",
    "N": "genitourinary",
    "C": "neoplasms",
    "D": "neoplasms",
    "A": "infection",
    "B": "infection",
}


def per_category(values: pd.Series, fn: Callable[[object], object], missing: object) -> pd.Series:
    """Apply ``fn`` once per distinct value (a coded column has few) and broadcast back."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True, sort=False)
    mapped = np.array([fn(u) for u in uniques] + [missing], dtype=object)
    return pd.Series(mapped[codes], index=values.index)


def _icd10_chapter(code: object) -> object:
    text = str(code).strip().upper()
    return _ICD10_CHAPTERS.get(text[:1], "other")


def icd10_group(codes: pd.Series) -> pd.Series:
    return per_category(codes, _icd10_chapter, "missing")
