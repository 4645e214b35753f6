"""Exact path-dependent TreeSHAP for single requests, from per-leaf tables.

XGBoost's ``pred_contribs`` walks every path of every tree for every row: about 0.6 ms per row
for the readmission model (336 trees of depth 4), two thirds of a request's prediction time. The
same values can be read from tables built once per model ("Fast TreeSHAP v2", Yang 2021):

- a leaf's share of feature i's SHAP value depends only on which of its path's splits the row
  satisfies (one bit per split) and on constants of the tree (leaf value, cover fractions);
- with at most ``MAX_PATH`` splits per path, each leaf gets a table over the 2^depth satisfied-
  split patterns, holding its share for each feature on its path.

A row then costs one comparison per split, one table lookup per leaf and a sum per feature,
vectorized across the whole ensemble (or, for a request's few rows, one compiled loop:
``tree_shap_kernel``). The values are those of Lundberg et al.'s path-dependent TreeSHAP (the
algorithm behind ``pred_contribs``). The tables are computed in float64 and held in float32,
and summed in float64; XGBoost computes in float32 throughout, so the two agree to about 1e-7
rather than bit for bit. ``RowScorer`` uses the tables only after they matched
``pred_contribs`` on probe rows that take every branch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_PATH = 8  # satisfied-split patterns are packed into one byte per leaf
MAX_TABLE_VALUES = 4_000_000  # 16 MB of float32; deeper ensembles keep pred_contribs
AGREEMENT = 1e-5  # log-odds; XGBoost's float32 arithmetic differs from ours by ~1e-6


@dataclass(frozen=True)
class _Leaf:
    value: float
    splits: list[tuple[int, bool]]  # (ensemble-wide split index, the path goes left)
    split_slots: list[int]  # per split: the index of its feature in ``features``
    features: list[int]  # the path's distinct features, in first-use order
    zero_fractions: list[float]  # per feature: the share of cover that takes the path


class PathTables:
    """TreeSHAP contributions of an XGBoost tree ensemble (one output) from per-leaf tables."""

    def __init__(
        self,
        split_feature: np.ndarray,
        split_threshold: np.ndarray,
        split_default_left: np.ndarray,
        categorical_splits: np.ndarray,
        categories_right: np.ndarray,
        leaves: list[_Leaf],
        n_features: int,
        bias: float,
    ) -> None:
        self.n_features = n_features
        self.bias = bias
        self._feature = split_feature
        self._threshold = split_threshold
        self._default_left = split_default_left
        self._categorical = categorical_splits
        self._categories_right = categories_right.ravel()
        self._category_width = categories_right.shape[1] - 2
        self._category_base = (
            np.arange(len(categorical_splits), dtype=np.intp) * (categories_right.shape[1])
        )
        n_splits = len(split_feature)
        depth = max((len(leaf.splits) for leaf in leaves), default=0)
        width = max((len(leaf.features) for leaf in leaves), default=0)
        self._patterns = 1 << depth
        always = 2 * n_splits  # the padding split every row satisfies
        # Four or eight split positions per leaf, padded with ``always``: a leaf's satisfied-
        # split bits are then one uint32 or uint64 read (see ``_pack``).
        self._path = np.full((len(leaves), 4 if depth <= 4 else 8), always, dtype=np.intp)
        self._slot_feature = np.full((len(leaves), max(width, 1)), n_features, dtype=np.intp)
        # float32, as XGBoost's own TreeSHAP arithmetic; sums are float64. Half the bytes of
        # float64: the table is larger than a core's cache, and a row reads a line per leaf.
        self._table = np.zeros((len(leaves) * self._patterns, max(width, 1)), dtype=np.float32)
        for i, leaf in enumerate(leaves):
            # Satisfying a split means going its way: index s if it goes left, n + s if right.
            for j, (split, left) in enumerate(leaf.splits):
                self._path[i, j] = split if left else n_splits + split
            self._slot_feature[i, : len(leaf.features)] = leaf.features
            rows = slice(i * self._patterns, (i + 1) * self._patterns)
            self._table[rows, : len(leaf.features)] = _leaf_table(leaf, depth)
        self._leaf_base = np.arange(len(leaves), dtype=np.intp) * self._patterns
        self._leaf_value = np.asarray([leaf.value for leaf in leaves], dtype=np.float32)
        self._one_row_index = self._slot_feature.ravel()  # bincount bins for a single row
        self._compiled: tuple[Any, tuple[Any, ...]] | None = None  # see use_compiled

    @classmethod
    def of_booster(
        cls, booster: Any, iterations: tuple[int, int], n_features: int, bias: float
    ) -> PathTables | None:
        """Tables for ``booster``'s trees in ``iterations``; None when paths are deeper than
        ``MAX_PATH`` or the tables would be too big. ``bias`` is XGBoost's last
        ``pred_contribs`` column (base margin plus the trees' expected values)."""
        model = json.loads(booster.save_raw("json"))
        if model["learner"]["learner_model_param"].get("num_target", "1") != "1":
            return None
        forest = model["learner"]["gradient_booster"]["model"]
        if model["learner"]["gradient_booster"]["name"] != "gbtree":
            return None
        indptr = forest["iteration_indptr"]
        trees = forest["trees"][indptr[iterations[0]] : indptr[iterations[1]]]
        splits = _Splits()
        leaves: list[_Leaf] = []
        for tree in trees:
            leaves.extend(splits.add_tree(tree))
        depth = max((len(leaf.splits) for leaf in leaves), default=0)
        width = max((len(leaf.features) for leaf in leaves), default=1)
        if depth > MAX_PATH or len(leaves) * (1 << depth) * width > MAX_TABLE_VALUES:
            return None
        return cls(*splits.arrays(), leaves, n_features, bias)

    def agrees_with(self, probe: np.ndarray, expected: np.ndarray) -> bool:
        """Whether the tables give ``expected`` (XGBoost ``pred_contribs`` on ``probe``) within
        ``AGREEMENT``. Takes XGBoost's bias column as the tables' own bias when it is the same
        for every row, as it must be."""
        bias = float(expected[0, -1])
        if not np.all(expected[:, -1] == bias):
            return False
        self.bias = bias
        return float(np.max(np.abs(self.contributions(probe) - expected))) <= AGREEMENT

    def probe_rows(self, n: int = 256, seed: int = 0) -> np.ndarray:
        """Rows that send every split both ways: each value is drawn from the split thresholds
        (at, just below and just above), the categories in the sets, a negative and an out-of-
        range code, and missing."""
        rng = np.random.default_rng(seed)
        candidates: list[np.ndarray] = []
        for feature in range(self.n_features):
            at = self._threshold[self._feature == feature].astype(np.float64)
            near = np.concatenate(
                [at, np.nextafter(at.astype(np.float32), np.float32(-np.inf)), at + 1.0]
            )
            codes = np.arange(-1.0, float(self._category_width) + 2.0)
            candidates.append(np.concatenate([near, codes, [np.nan, 0.0]]))
        return np.column_stack([rng.choice(c, size=n) for c in candidates])

    def use_compiled(self, probe: np.ndarray, base_margin: np.float32) -> bool:
        """Answer with the compiled pass (``tree_shap_kernel``) from now on, if numba is there,
        it is not switched off, and it gives this numpy pass's margins and contributions bit
        for bit on ``probe``."""
        from hospital_mlops.model import tree_shap_kernel as kernel

        self._compiled = None  # the reference is the numpy pass
        compiled = kernel.compiled_pass()
        if compiled is None:
            return False
        expected = self.margins_and_contributions(probe, base_margin)
        try:
            self._compiled = (compiled, self._compiled_arrays())
            got: tuple[np.ndarray, np.ndarray] | None = self.margins_and_contributions(
                probe, base_margin
            )
        except Exception as exc:  # e.g. a numba that cannot compile here: the numpy pass serves
            kernel.log.warning(
                "compiled TreeSHAP pass unavailable: %s: %s", type(exc).__name__, exc
            )
            got = None
        if got is None or not all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True)):
            self._compiled = None
            return False
        return True

    def _compiled_arrays(self) -> tuple[Any, ...]:
        """The compiled pass's arguments after the row: the tables in their smallest types."""
        from hospital_mlops.model.tree_shap_kernel import smallest_index

        category_row = np.full(len(self._feature), -1, dtype=np.intp)
        category_row[self._categorical] = np.arange(len(self._categorical))
        return (
            smallest_index(self._feature),
            self._threshold,
            self._default_left,
            smallest_index(category_row),
            self._categories_right.reshape(len(self._categorical), self._category_width + 2),
            float(self._category_width),
            smallest_index(self._path),
            self._patterns,
            self._table,
            smallest_index(self._slot_feature),
            self._leaf_value,
        )

    @property
    def compiled(self) -> bool:
        return self._compiled is not None

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-row contributions, ``(rows, n_features + 1)``; the last column is the bias."""
        if self._compiled is not None:
            return self._compiled_pass(x, np.float32(0.0))[1]
        return self._contributions(self._patterns_of(x))

    def _compiled_pass(
        self, x: np.ndarray, base_margin: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        assert self._compiled is not None
        compiled, arrays = self._compiled
        x32 = np.ascontiguousarray(x, dtype=np.float32)
        if x32.ndim != 2 or x32.shape[1] != self.n_features:  # compiled code reads unchecked
            raise ValueError(f"rows must have {self.n_features} features, got {x32.shape}")
        margins = np.empty(len(x32), dtype=np.float32)
        out = np.zeros((len(x32), self.n_features + 1))
        compiled(x32, *arrays, np.float32(base_margin), margins, out)
        out[:, -1] = self.bias
        return margins, out

    def margins_and_contributions(
        self, x: np.ndarray, base_margin: np.float32
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows' margins as XGBoost sums them (float32, from ``base_margin``, tree by tree
        in order: the same bits as its ``output_margin``), and their contributions."""
        if self._compiled is not None:
            return self._compiled_pass(x, base_margin)
        pattern = self._patterns_of(x)
        reached = pattern == self._patterns - 1  # every split on the path satisfied
        if len(pattern) == 1:  # a boolean mask is a third of nonzero's cost on one row
            leaf_values = self._leaf_value[reached[0]][None, :]
        else:
            leaf_values = self._leaf_value[np.nonzero(reached)[1]].reshape(len(pattern), -1)
        terms = np.empty((len(pattern), leaf_values.shape[1] + 1), dtype=np.float32)
        terms[:, 0] = base_margin
        terms[:, 1:] = leaf_values
        margins = np.cumsum(terms, axis=1)[:, -1]  # float32, and cumsum adds in order
        return margins, self._contributions(pattern)

    def _patterns_of(self, x: np.ndarray) -> np.ndarray:
        """Per row and leaf: the bits of the leaf's path splits the row satisfies."""
        x32 = np.asarray(x, dtype=np.float32)  # XGBoost compares in float32
        rows = x32.shape[0]
        value = x32[:, self._feature]
        left = value < self._threshold
        if self._categorical.size:
            # XGBoost: a category in the split's set goes right; any other code, negative or
            # beyond the set's bit field, goes left (missing is handled below). Column 0 of
            # ``_categories_right`` is "negative", its last "beyond"; both False.
            # fmax: missing → -1 too; floor, not +1 then truncate: -1e-38 + 1 rounds to 1.0,
            # and a tiny negative code is invalid (left) to XGBoost, not category 0.
            codes = np.floor(np.fmax(value[:, self._categorical], -1.0))
            top = float(self._category_width)
            column = (np.minimum(codes, top) + 1.0).astype(np.intp)
            chosen = np.take(self._categories_right, self._category_base + column)
            left[:, self._categorical] = ~chosen
        left = np.where(np.isnan(value), self._default_left, left)
        satisfied = np.concatenate([left, ~left, np.ones((rows, 1), dtype=bool)], axis=1)
        taken = np.take(satisfied, self._path, axis=1)  # (rows, leaves, MAX_PATH) bools
        return _pack(taken).astype(np.intp) & (self._patterns - 1)

    def _contributions(self, pattern: np.ndarray) -> np.ndarray:
        rows = len(pattern)
        shares = np.take(self._table, self._leaf_base + pattern, axis=0)  # (rows, leaves, width)
        slots = self.n_features + 1
        if rows == 1:
            index = self._one_row_index
        else:
            index = self._slot_feature + (np.arange(rows) * slots)[:, None, None]
        summed = np.bincount(index.ravel(), weights=shares.ravel(), minlength=rows * slots)
        out = summed.reshape(rows, slots)
        out[:, -1] = self.bias
        return out


def _pack(taken: np.ndarray) -> np.ndarray:
    """Bit j of the result = byte j of each row of four or eight bools (numpy's packbits along
    a short last axis costs ten times more). In the little-endian word byte j sits at bit 8j;
    the multiplier moves it to bit top + j (top = 24 or 56), and every other product lands at
    a distinct bit outside top..top+7 (8j − 7k = 8j' − 7k' only when j = j', k = k'), so
    nothing carries in."""
    if taken.shape[-1] == 4:
        words32 = np.ascontiguousarray(taken).view("<u4")[..., 0]
        return (words32 * np.uint32(0x01020408)) >> np.uint32(24)
    words = np.ascontiguousarray(taken).view("<u8")[..., 0]
    return (words * np.uint64(0x0102040810204080)) >> np.uint64(56)


class _Splits:
    """The ensemble's internal nodes, numbered across trees, as the rows' decisions need them."""

    def __init__(self) -> None:
        self.feature: list[int] = []
        self.threshold: list[float] = []
        self.default_left: list[bool] = []
        self.category_sets: list[set[int] | None] = []

    def add_tree(self, tree: dict[str, Any]) -> list[_Leaf]:
        left, right = tree["left_children"], tree["right_children"]
        cover = tree["sum_hessian"]
        categories: dict[int, set[int]] = {}
        for k, node in enumerate(tree["categories_nodes"]):
            start, size = tree["categories_segments"][k], tree["categories_sizes"][k]
            categories[node] = set(tree["categories"][start : start + size])
        number: dict[int, int] = {}
        for node in range(len(left)):
            if left[node] != -1:
                number[node] = len(self.feature)
                self.feature.append(int(tree["split_indices"][node]))
                self.threshold.append(float(tree["split_conditions"][node]))
                self.default_left.append(bool(tree["default_left"][node]))
                is_categorical = bool(tree["split_type"][node])
                self.category_sets.append(categories.get(node, set()) if is_categorical else None)
        leaves: list[_Leaf] = []
        # (node, path so far); iterative so a deep tree cannot hit the recursion limit
        stack: list[tuple[int, list[tuple[int, bool, int]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if left[node] == -1:
                leaves.append(self._leaf(node, float(tree["split_conditions"][node]), path, cover))
                continue
            stack.append((left[node], [*path, (node, True, number[node])]))
            stack.append((right[node], [*path, (node, False, number[node])]))
        return leaves

    def _leaf(
        self, node: int, value: float, path: list[tuple[int, bool, int]], cover: list[float]
    ) -> _Leaf:
        features: list[int] = []
        fractions: list[float] = []
        slots: list[int] = []
        splits: list[tuple[int, bool]] = []
        for position, (parent, goes_left, split) in enumerate(path):
            child = path[position + 1][0] if position + 1 < len(path) else node
            feature = self.feature[split]
            if feature not in features:
                features.append(feature)
                fractions.append(1.0)
            slot = features.index(feature)
            # A feature split twice on the path: its fractions multiply (TreeSHAP's unwinding)
            fractions[slot] *= cover[child] / cover[parent]
            slots.append(slot)
            splits.append((split, goes_left))
        return _Leaf(value, splits, slots, features, fractions)

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        categorical = [i for i, s in enumerate(self.category_sets) if s is not None]
        width = 1 + max((max(s) for s in self.category_sets if s), default=0)
        # Columns: "negative code", the codes 0 … width-1, "code beyond the set's bit field".
        chosen = np.zeros((len(categorical), width + 2), dtype=bool)
        for row, split in enumerate(categorical):
            chosen[row, [c + 1 for c in sorted(self.category_sets[split] or ())]] = True
        return (
            np.asarray(self.feature, dtype=np.intp),
            np.asarray(self.threshold, dtype=np.float32),
            np.asarray(self.default_left, dtype=bool),
            np.asarray(categorical, dtype=np.intp),
            chosen,
        )


def _leaf_table(leaf: _Leaf, depth: int) -> np.ndarray:
    """``(2^depth, len(features))``: the leaf's share of each path feature's SHAP value for
    every pattern of satisfied splits (bit j: split j of the path; padding bits ignored).

    Path-dependent TreeSHAP gives feature i, from this leaf, v · (o_i − z_i) · Σ_S w(|S|, n)
    Π_{k∈S} o_k Π_{k∉S, k≠i} z_k over subsets S of the other path features, with o_k = 1 when
    the row satisfies every split on k, z_k the cover fraction along k's splits, and
    w(s, n) = s!(n−s−1)!/n!. The subset sum is Σ_s w(s, n) times the t^s coefficient of
    Π_{k≠i} (z_k + o_k t)."""
    n = len(leaf.features)
    patterns = np.arange(1 << depth)
    bits = (patterns[:, None] >> np.arange(max(depth, 1))) & 1  # (patterns, depth)
    ones = np.ones((len(patterns), n), dtype=np.float64)
    for j, k in enumerate(leaf.split_slots):
        ones[:, k] *= bits[:, j]
    zeros = np.asarray(leaf.zero_fractions, dtype=np.float64)
    weights = np.array(
        [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    )
    table = np.zeros((len(patterns), n))
    for i in range(n):
        poly = np.zeros((len(patterns), n))  # coefficients of t^0 … t^(n-1)
        poly[:, 0] = 1.0
        for k in range(n):
            if k == i:
                continue
            shifted = np.zeros_like(poly)
            shifted[:, 1:] = poly[:, :-1] * ones[:, k : k + 1]
            poly = poly * zeros[k] + shifted
        table[:, i] = leaf.value * (ones[:, i] - zeros[i]) * (poly @ weights)
    return table
