"""Champion vs challenger on the same slice: both models score the same encounters, and the
differences come with paired patient-cluster bootstrap CIs (the same resamples for both)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.model.evaluate.bootstrap import ClusterBootstrap


class CompareError(ValueError):
    """The two models cannot be compared on one slice (e.g. different feature sets)."""


Metric = Callable[[np.ndarray], np.ndarray]


def _metrics(y: np.ndarray, risk: np.ndarray, threshold: float) -> dict[str, Metric]:
    scored = weighted.Scored.of(y, risk)
    bins = weighted.quantile_bins(risk, 10)

    def alerts(w: np.ndarray) -> np.ndarray:
        return weighted.at_threshold(y, risk, threshold, w)["alerts_per_100"]

    return {
        "auroc": lambda w: weighted.auroc(scored, w),
        "auprc": lambda w: weighted.auprc(scored, w),
        "ece": lambda w: weighted.ece(y, risk, bins, w),
        "calibration_slope": lambda w: weighted.calibration_slope(y, risk, w),
        "brier": lambda w: weighted.brier(y, risk, w),
        "alerts_per_100": alerts,
    }


def compare_scores(
    labels: np.ndarray,
    patients: pd.Series,
    scores: dict[str, np.ndarray],
    thresholds: dict[str, float],
    replicates: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Headline metrics per model and the challenger − champion differences."""
    if set(scores) != {"champion", "challenger"}:
        raise CompareError("compare needs exactly a champion and a challenger")
    y = labels.astype("float64")
    boot = ClusterBootstrap.over(patients, replicates, seed, 0.95)
    ones = np.ones((1, len(y)))
    per_model: dict[str, Any] = {}
    reps: dict[str, dict[str, np.ndarray]] = {}
    for name, risk in scores.items():
        metrics = _metrics(y, risk, thresholds[name])
        reps[name] = {m: boot.replicate_values(fn) for m, fn in metrics.items()}
        per_model[name] = {
            m: boot.interval(float(fn(ones)[0]), reps[name][m]).as_dict()
            for m, fn in metrics.items()
        }
        per_model[name]["threshold"] = round(thresholds[name], 6)
    difference = {
        m: boot.interval(
            per_model["challenger"][m]["value"] - per_model["champion"][m]["value"],
            reps["challenger"][m] - reps["champion"][m],
        ).as_dict()
        for m in reps["champion"]
    }
    return {
        "rows": len(y),
        "patients": boot.patients,
        "events": int(y.sum()),
        "models": per_model,
        "challenger_minus_champion": difference,
        "bootstrap": {"replicates": replicates, "unit": "patient", "paired": True},
    }
