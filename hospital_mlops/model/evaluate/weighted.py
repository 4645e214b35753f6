"""Classification and calibration metrics over many row-weight vectors at once.

A patient-cluster bootstrap replicate is a weight per row (how often its patient was drawn), so
every metric here takes weights of shape (replicates, rows) and returns one value per replicate.
The point estimate is the same function with a single row of ones: there is one implementation
of each metric, and the bootstrap cannot drift from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hospital_mlops.model.train import expit, logit


@dataclass(frozen=True)
class Scored:
    """Labels and risks sorted by descending risk, with the boundaries of tied-risk groups."""

    y: np.ndarray
    risk: np.ndarray
    order: np.ndarray
    group_starts: np.ndarray

    @classmethod
    def of(cls, y: np.ndarray, risk: np.ndarray) -> Scored:
        order = np.argsort(-risk, kind="stable")
        sorted_risk = risk[order]
        starts = np.flatnonzero(np.r_[True, sorted_risk[1:] != sorted_risk[:-1]])
        return cls(
            y=y.astype("float64"), risk=risk.astype("float64"), order=order, group_starts=starts
        )


def _by_group(scored: Scored, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ws = w[:, scored.order]
    ys = scored.y[scored.order]
    pos = np.add.reduceat(ws * ys, scored.group_starts, axis=1)
    neg = np.add.reduceat(ws * (1 - ys), scored.group_starts, axis=1)
    return pos, neg


def auroc(scored: Scored, w: np.ndarray) -> np.ndarray:
    """P(risk of a case > risk of a non-case), ties counted half (Mann-Whitney)."""
    pos, neg = _by_group(scored, w)
    pos_above = np.cumsum(pos, axis=1) - pos
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((neg * (pos_above + 0.5 * pos)).sum(axis=1) / total)


def auprc(scored: Scored, w: np.ndarray) -> np.ndarray:
    """Average precision: precision at each distinct threshold weighted by the recall gained."""
    pos, neg = _by_group(scored, w)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        return np.asarray((pos * precision).sum(axis=1) / tp[:, -1])


def brier(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.asarray((w * (risk - y) ** 2).sum(axis=1) / w.sum(axis=1))


def observed_to_expected(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((w * y).sum(axis=1) / (w * risk).sum(axis=1))


def quantile_bins(risk: np.ndarray, bins: int) -> np.ndarray:
    """Equal-mass bins fixed on the full sample (replicates reuse them)."""
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, bins + 1)))
    return np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, len(edges) - 2)


def ece(y: np.ndarray, risk: np.ndarray, bin_of: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expected calibration error: |observed − predicted| per bin, weighted by the bin's share."""
    onehot = np.zeros((len(y), int(bin_of.max()) + 1))
    onehot[np.arange(len(y)), bin_of] = 1.0
    observed = (w * y) @ onehot
    predicted = (w * risk) @ onehot
    return np.asarray(np.abs(observed - predicted).sum(axis=1) / w.sum(axis=1))


_MAX_STEP = 1.0  # a trust region: plain Newton overshoots into saturation on extreme risks


def _newton(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, with_slope: bool, iterations: int = 60
) -> np.ndarray:
    """Weighted logistic fits of y on x, one per replicate row of w (vectorized, step-limited
    Newton). Without slope: intercept only, with x as a fixed offset."""
    replicates = w.shape[0]
    a = np.zeros(replicates)
    b = np.ones(replicates)
    for _ in range(iterations):
        eta = np.clip(a[:, None] + b[:, None] * x[None, :], -35, 35)
        p = expit(eta)
        r = w * (y[None, :] - p)
        h = w * p * (1 - p)
        g_a = r.sum(axis=1)
        h_aa = h.sum(axis=1)
        if with_slope:
            g_b = (r * x).sum(axis=1)
            h_ab = (h * x).sum(axis=1)
            h_bb = (h * x * x).sum(axis=1)
            det = h_aa * h_bb - h_ab**2
            ok = det > 0
            safe = np.where(ok, det, 1.0)
            step_a = np.where(ok, (h_bb * g_a - h_ab * g_b) / safe, 0.0)
            step_b = np.where(ok, (h_aa * g_b - h_ab * g_a) / safe, 0.0)
        else:
            step_a = np.where(h_aa > 0, g_a / np.where(h_aa > 0, h_aa, 1.0), 0.0)
            step_b = np.zeros(replicates)
        step_a = np.clip(step_a, -_MAX_STEP, _MAX_STEP)
        step_b = np.clip(step_b, -_MAX_STEP, _MAX_STEP)
        a += step_a
        b += step_b
        if max(np.max(np.abs(step_a)), np.max(np.abs(step_b))) < 1e-10:
            break
    return np.vstack([a, b])


def calibration_slope(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Slope of the logistic recalibration of y on logit(risk); 1 is ideal, <1 overfitting."""
    return np.asarray(_newton(logit(risk), y, w, with_slope=True)[1])


def calibration_intercept(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Calibration-in-the-large: the intercept with logit(risk) as offset; 0 is ideal."""
    return np.asarray(_newton(logit(risk), y, w, with_slope=False)[0])


def at_threshold(
    y: np.ndarray, risk: np.ndarray, threshold: float, w: np.ndarray
) -> dict[str, np.ndarray]:
    """Confusion-matrix rates when every risk ≥ threshold alerts."""
    alert = (risk >= threshold).astype("float64")
    tp = (w * y * alert).sum(axis=1)
    fp = (w * (1 - y) * alert).sum(axis=1)
    fn = (w * y * (1 - alert)).sum(axis=1)
    tn = (w * (1 - y) * (1 - alert)).sum(axis=1)
    n = tp + fp + fn + tn
    with np.errstate(invalid="ignore", divide="ignore"):
        ppv = tp / (tp + fp)
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": ppv,
            "npv": tn / (tn + fn),
            "alerts_per_100": 100 * (tp + fp) / n,
            "selection_rate": (tp + fp) / n,
            "number_needed_to_evaluate": 1 / ppv,
        }
