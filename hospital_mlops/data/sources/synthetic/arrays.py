"""Small vectorized helpers of the synthetic generator: the array types, categorical draws from
shares, the logistic function, integers formatted as strings, label lookups and segment starts."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
ObjArr = npt.NDArray[np.object_]


def choose(rng: np.random.Generator, shares: tuple[float, ...], size: int) -> IntArr:
    """``size`` category indices drawn with the given (unnormalized) shares."""
    p = np.asarray(shares, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int64)


def choose_per_row(rng: np.random.Generator, weights: FloatArr) -> IntArr:
    """One category per row from per-row (unnormalized) weights of shape (n, k)."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    idx = (u[:, None] >= cum).sum(axis=1)
    return np.minimum(idx, weights.shape[1] - 1).astype(np.int64)


def sigmoid(x: FloatArr) -> FloatArr:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def format_ints(values: IntArr, prefix: str = "", width: int = 0, suffix: str = "") -> ObjArr:
    """Format integers as ``prefix + zero-padded digits + suffix`` (vectorized, via Arrow)."""
    arr: Any = pa.array(values, type=pa.int64()).cast(pa.string())
    if width:
        arr = pc.utf8_lpad(arr, width=width, padding="0")
    if prefix or suffix:
        arr = pc.binary_join_element_wise(prefix, arr, suffix, "")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def labels_at(labels: tuple[str, ...], idx: IntArr) -> ObjArr:
    """Index into a small label list; rows share the label objects (cheap at any size)."""
    return np.asarray(np.array(labels, dtype=object)[idx], dtype=object)


def segment_starts(counts: IntArr) -> IntArr:
    """The first index of each segment when segments of these lengths are laid end to end."""
    return np.asarray(np.cumsum(counts) - counts, dtype=np.int64)
