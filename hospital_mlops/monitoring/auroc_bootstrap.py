"""A window's realized AUROC with a Poisson-bootstrap CI, in time linear in its size.

The Poisson bootstrap gives every row a weight drawn from Poisson(1) per replicate. The AUROC of
weighted rows depends only on the summed weight of the cases at each distinct risk and of the
non-cases between consecutive case risks (or tied with one), and a sum of m independent
Poisson(1) weights is Poisson(m). So each replicate draws one Poisson per such group instead of
one per row, over a structure sorted once: the same distribution of replicates as weighting
every row (held equal by the tests), without a replicates × rows weight matrix, which at a
million outcomes a window is gigabytes per window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hospital_mlops.monitoring.poisson_draws import PoissonDraws

_BLOCK = 25  # replicates drawn together: matrices of a few MB, each block its own stream


@dataclass(frozen=True)
class RankGroups:
    """Cases grouped by distinct risk (descending); non-cases grouped into classes by how many
    case groups rank strictly above them and whether they tie the next one."""

    case_counts: np.ndarray  # cases per distinct case risk, highest risk first
    class_counts: np.ndarray  # non-cases per class
    class_above: np.ndarray  # case groups strictly above the class
    class_tied: np.ndarray  # 1.0 where the class ties case group ``class_above``, else 0.0

    @classmethod
    def of(cls, y: np.ndarray, risk: np.ndarray) -> RankGroups:
        case = np.asarray(y) == 1
        values, counts = np.unique(risk[case], return_counts=True)  # ascending
        negative = risk[~case]
        at_or_below = np.searchsorted(values, negative, side="right")
        below = np.searchsorted(values, negative, side="left")
        above = len(values) - at_or_below
        key = 2 * above + (at_or_below > below)
        classes, class_counts = np.unique(key, return_counts=True)
        return cls(
            case_counts=counts[::-1].astype("float64"),
            class_counts=class_counts.astype("float64"),
            class_above=classes // 2,
            class_tied=(classes % 2).astype("float64"),
        )

    def auroc(self, cases: np.ndarray, non_cases: np.ndarray) -> np.ndarray:
        """AUROC per row of group weights: ``cases`` (replicates × case groups) and
        ``non_cases`` (replicates × classes). Ties count half (Mann-Whitney)."""
        above = np.zeros((cases.shape[0], cases.shape[1] + 1))
        np.cumsum(cases, axis=1, out=above[:, 1:])
        tied = cases[:, np.minimum(self.class_above, max(cases.shape[1] - 1, 0))]
        favourable = above[:, self.class_above] + 0.5 * self.class_tied * tied
        total = cases.sum(axis=1) * non_cases.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray((non_cases * favourable).sum(axis=1) / total)

    def point(self) -> float:
        return float(self.auroc(self.case_counts[None, :], self.class_counts[None, :])[0])

    def replicates(self, count: int, seed: int) -> np.ndarray:
        """``count`` Poisson-bootstrap AUROCs. Blocks of replicates draw from streams spawned
        from ``seed``, so the result does not depend on how blocks are scheduled."""
        blocks = [min(_BLOCK, count - start) for start in range(0, count, _BLOCK)]
        streams = np.random.SeedSequence(seed).spawn(len(blocks))
        draws = PoissonDraws(np.r_[self.case_counts, self.class_counts])
        cut = len(self.case_counts)
        out = []
        for size, stream in zip(blocks, streams, strict=True):
            weights = draws.draw(np.random.default_rng(stream), size)
            out.append(self.auroc(weights[:, :cut], weights[:, cut:]))
        return np.concatenate(out)


def auroc_with_ci(
    y: np.ndarray, risk: np.ndarray, replicates: int, seed: int, ci_level: float
) -> tuple[float, list[float]]:
    """The AUROC of ``risk`` for outcomes ``y`` (1/0) and its percentile Poisson-bootstrap CI
    (replicates with no case or no non-case are dropped)."""
    groups = RankGroups.of(np.asarray(y), np.asarray(risk, dtype="float64"))
    values = groups.replicates(replicates, seed)
    values = values[np.isfinite(values)]
    tail = (1 - ci_level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return groups.point(), [round(float(low), 6), round(float(high), 6)]
