"""Poisson draws for a fixed vector of small integer means, many times over.

The window bootstrap draws one Poisson per group per replicate: hundreds of thousands of means,
mostly small, two hundred times a window. numpy draws a small mean by multiplying uniforms, as
many as the mean; inverting the CDF through a guide table takes one uniform, two lookups and
rarely a step. The tables are built once per vector of means. Means above ``TABLE_MAX`` are
few and go to numpy.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

TABLE_MAX = 256


class PoissonDraws:
    def __init__(self, means: np.ndarray) -> None:
        self.means = np.asarray(means, dtype="float64")
        values, which = np.unique(self.means, return_inverse=True)
        tabled = values <= TABLE_MAX
        self._large = np.flatnonzero(~tabled[which])
        cdfs = []
        for mean in values[tabled]:
            # the tail beyond mean + 12 sd + 30 is below 1e-17, finer than a uniform resolves
            k = np.arange(int(mean + 12 * np.sqrt(mean) + 30))
            cdf = stats.poisson.cdf(k, mean)
            cdf[-1] = 1.0  # every uniform in [0, 1) lands in the table
            cdfs.append(cdf)
        lengths = np.array([len(c) for c in cdfs], dtype=np.int64)
        starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(np.int64)
        self._cdf = np.concatenate(cdfs) if cdfs else np.ones(1)
        # guide[j] of a table: the first k whose CDF exceeds j / size (twice the table's length:
        # a draw then rarely steps past its guess)
        guides, guide_starts = [], []
        at = 0
        for cdf, start in zip(cdfs, starts, strict=True):
            size = 2 * len(cdf)
            guides.append(start + np.searchsorted(cdf, np.arange(size) / size, side="right"))
            guide_starts.append(at)
            at += size
        self._guide = np.concatenate(guides) if guides else np.zeros(1, dtype=np.int64)
        slot = np.cumsum(tabled) - 1  # a tabled value's position among the tables
        table_of = np.where(tabled[which], slot[which], 0)
        self._start = starts[table_of] if cdfs else np.zeros(len(which), dtype=np.int64)
        self._guide_start = np.asarray(guide_starts, dtype=np.int64)[table_of] if cdfs else 0
        self._guide_size = (2 * lengths[table_of]).astype("float64") if cdfs else 1.0

    def draw(self, rng: np.random.Generator, replicates: int) -> np.ndarray:
        """``replicates`` × len(means) independent draws, as float64."""
        u = rng.random((replicates, len(self.means)))
        position = self._guide[self._guide_start + (u * self._guide_size).astype(np.int64)]
        behind = np.flatnonzero(self._cdf[position] <= u)
        flat_u, flat_position = u.reshape(-1), position.reshape(-1)
        while len(behind):  # the inverse CDF: the first k whose CDF exceeds u
            flat_position[behind] += 1
            behind = behind[self._cdf[flat_position[behind]] <= flat_u[behind]]
        out = (position - self._start).astype("float64")
        if len(self._large):
            out[:, self._large] = rng.poisson(
                self.means[self._large], (replicates, len(self._large))
            )
        return out
