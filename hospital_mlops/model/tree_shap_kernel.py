"""The TreeSHAP tables' pass for a request's rows as one compiled loop (numba).

``PathTables`` answers a row with a dozen numpy calls. Each makes a temporary the size of the
ensemble (the leaves' patterns, their table rows: ~250 kB for the readmission model), so a
one-row request spends more time writing temporaries, and evicting the server's own code and
data from the core's cache, than reading the tables. This loop reads the same tables and
writes nothing but its answer, with the split and path arrays in their smallest integer
types: about half the time per row in a running predictor, and less of the cache disturbed for
the request's other work (docs/serving.md#performance, bench_predictor_stages.py).

It is an accelerator, never the reference: ``PathTables.use_compiled`` switches it on only
after it gave the numpy pass's margins and contributions bit for bit on probe rows (same
float32 comparisons and margin sums, the same float64 additions in the same order). Without
numba, or with ``HMLOPS_COMPILED_TREESHAP=0`` (e.g. where policy forbids JIT-compiled code),
the numpy pass serves. numba is BSD-2-Clause.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np

SWITCH_ENV = "HMLOPS_COMPILED_TREESHAP"  # "0": keep the numpy pass
log = logging.getLogger("hospital_mlops.model.tree_shap_kernel")

_compiled: Callable[..., Any] | None = None


def enabled() -> bool:
    return os.environ.get(SWITCH_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _rows_pass(
    x: np.ndarray,  # (rows, features) float32
    feature: np.ndarray,  # per split: its feature
    threshold: np.ndarray,  # per split: float32
    default_left: np.ndarray,  # per split: where missing goes
    category_row: np.ndarray,  # per split: its row of ``categories_right``, or -1
    categories_right: np.ndarray,  # (categorical splits, codes + 2) bool
    category_top: float,
    path: np.ndarray,  # (leaves, positions): split s (left), n + s (right), 2n (padding)
    patterns: int,  # 2^depth: a leaf's rows in ``table`` (positions past depth are padding)
    table: np.ndarray,  # (leaves * patterns, width) float32, summed in float64
    slot_feature: np.ndarray,  # (leaves, width): the feature of each table column
    leaf_value: np.ndarray,  # float32
    base_margin: Any,  # np.float32
    margins: np.ndarray,  # out: (rows,) float32
    out: np.ndarray,  # out: (rows, features + 1) float64, zeroed
) -> None:
    n = feature.shape[0]
    satisfied = np.empty(2 * n + 1, np.bool_)
    satisfied[2 * n] = True
    rows = np.empty(path.shape[0], np.int64)
    positions = path.shape[1]
    width = table.shape[1]
    for r in range(x.shape[0]):
        for s in range(n):
            value = x[r, feature[s]]
            if math.isnan(value):
                goes_left = default_left[s]
            elif category_row[s] >= 0:
                # as PathTables._patterns_of: a code in the set goes right; a negative code, or
                # one beyond the set's bit field (infinity too), goes left
                code = min(np.floor(max(float(value), -1.0)), category_top)
                goes_left = not categories_right[category_row[s], int(code) + 1]
            else:
                goes_left = value < threshold[s]
            satisfied[s] = goes_left
            satisfied[n + s] = not goes_left
        margin = base_margin
        for leaf in range(path.shape[0]):
            pattern = 0
            for j in range(positions):
                if satisfied[path[leaf, j]]:
                    pattern |= 1 << j
            pattern &= patterns - 1
            if pattern == patterns - 1:  # the leaf the row reaches: XGBoost's sum, in order
                margin = margin + leaf_value[leaf]
            rows[leaf] = leaf * patterns + pattern
        margins[r] = margin
        # A second pass that only reads the table: its loads do not wait on each other, so
        # the core keeps many cache misses in flight (the table is larger than a core's cache).
        for leaf in range(path.shape[0]):
            row = rows[leaf]
            for k in range(width):
                out[r, slot_feature[leaf, k]] += table[row, k]


def compiled_pass() -> Callable[..., Any] | None:
    """The compiled loop (built once per process), or None without numba or when switched
    off. Compiled machine code is cached on disk only where ``NUMBA_CACHE_DIR`` says: a
    read-only container gets a fresh compile (about a second) when the model loads."""
    global _compiled
    if not enabled():
        return None
    if _compiled is None:
        try:
            import numba
        except (ImportError, OSError) as exc:  # not installed, or its LLVM library won't load
            log.info("numba unavailable (%s): TreeSHAP uses the numpy pass", type(exc).__name__)
            return None
        cache = bool(os.environ.get("NUMBA_CACHE_DIR"))
        _compiled = numba.njit(nogil=True, cache=cache)(_rows_pass)
    return _compiled


def smallest_index(values: np.ndarray) -> np.ndarray:
    """Indices in the smallest integer type that holds them (less of the cache per request)."""
    top = int(values.max()) if values.size else 0
    bottom = int(values.min()) if values.size else 0
    for kind in (np.int8, np.int16, np.int32):
        info = np.iinfo(kind)
        if info.min <= bottom and top <= info.max:
            return np.ascontiguousarray(values, dtype=kind)
    return np.ascontiguousarray(values, dtype=np.int64)
