"""Patient-cluster bootstrap: resample patients, not encounters.

Encounters of one patient are correlated (the same person readmits again), so an encounter-level
bootstrap gives intervals that are too narrow. Each replicate draws patients with replacement and
weights every encounter by how often its patient was drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

CHUNK = 100  # replicates per weight matrix: bounds memory at CHUNK × rows floats


@dataclass(frozen=True)
class Estimate:
    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, Any]:
        return {"value": _round(self.value), "ci": [_round(self.low), _round(self.high)]}


def _round(x: float) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


@dataclass(frozen=True)
class ClusterBootstrap:
    patient_index: np.ndarray  # row → patient number
    patients: int
    replicates: int
    seed: int
    ci_level: float

    @classmethod
    def over(
        cls, patient_ids: pd.Series, replicates: int, seed: int, ci_level: float
    ) -> ClusterBootstrap:
        codes, uniques = pd.factorize(patient_ids, sort=True)
        return cls(codes, len(uniques), replicates, seed, ci_level)

    @cached_property
    def counts(self) -> np.ndarray:
        """How often each row's patient was drawn, per replicate (replicates × rows). Drawn once
        with a fixed seed: every metric and every subgroup sees the same resamples."""
        rng = np.random.default_rng(self.seed)
        per_patient = np.empty((self.replicates, self.patients), dtype=np.int32)
        for r in range(self.replicates):
            drawn = rng.integers(0, self.patients, size=self.patients)
            per_patient[r] = np.bincount(drawn, minlength=self.patients)
        return per_patient[:, self.patient_index]

    def weights(self, rows: np.ndarray | None = None) -> Iterator[np.ndarray]:
        counts = self.counts if rows is None else self.counts[:, rows]
        for start in range(0, self.replicates, CHUNK):
            yield counts[start : start + CHUNK].astype("float64")

    def replicate_values(
        self, metric: Callable[[np.ndarray], np.ndarray], rows: np.ndarray | None = None
    ) -> np.ndarray:
        return np.concatenate([metric(w) for w in self.weights(rows)])

    def estimate(
        self, metric: Callable[[np.ndarray], np.ndarray], rows: np.ndarray | None = None
    ) -> Estimate:
        n = len(self.patient_index) if rows is None else int(np.asarray(rows).sum())
        point = float(metric(np.ones((1, n)))[0])
        return self.interval(point, self.replicate_values(metric, rows))

    def interval(self, point: float, values: np.ndarray) -> Estimate:
        alpha = (1 - self.ci_level) / 2
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            return Estimate(point, float("nan"), float("nan"))
        low, high = np.quantile(finite, [alpha, 1 - alpha])
        return Estimate(point, float(low), float(high))
