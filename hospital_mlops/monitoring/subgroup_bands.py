"""Subgroup calibration's bands: what windows of a given size drawn from the validated (test)
period show for one group, and the statistics (O/E with its exact Poisson CI, ECE and its
sampling noise) computed by one implementation for a window's cell and for every draw.

The band and the rule (the "act" tier: a demonstrated impact). For a cell whose ``m``
predictions have outcomes, the band comes from windows of ``m`` drawn from the group's
test-period predictions (label, score). Each draw is two-stage: a bootstrap copy of the test
group, then ``m`` rows from that copy, so the band carries the test period's own sampling error
as well as the window's (with one stage, a band centred on a finite test period's O/E alarms
too often when windows are not much smaller than it). On each draw the same code as on the
window computes the exact Poisson CI of O/E and the ECE less its sampling noise.

- O/E alerts when its CI (``ci_level``) lies wholly outside the band ``[low, high]``: ``high``
  is the ``r``-th largest lower CI end over the draws and ``low`` the ``r``-th smallest upper
  end, ``r = floor(alpha/2 · (draws + 1))``.
- ECE alerts when it exceeds the band's upper end by more than its sampling noise:
  ``ECE − z·sqrt(Σ risk(1 − risk))/m > high`` (``z`` the two-sided normal quantile at
  ``ci_level``: the spread of the binned sum of (outcome − risk) if the risks were right), with
  ``high`` the ``r``-th largest of that quantity over the draws, ``r = floor(alpha · (draws + 1))``.

Why: the issue asks for the CI to lie outside the band; a band that is itself the range of the
point estimates would count the window's noise twice and miss a doubled event rate in small
subgroups. Setting the band on the CI ends of draws of the same size counts it once: a window
like the validated period crosses a band end with probability ``r / (draws + 1)`` whatever the
statistic's distribution (the rank of a new draw among exchangeable ones), which is at most the
per-test rate. ``alpha`` is ``false_alarm_rate / tests``, ``tests = 2 ×`` the groups that have
a band (O/E and ECE per group; Bonferroni), so a window raises any subgroup alert with
probability at most ``false_alarm_rate``. A cell's size is rounded *down* to a grid (steps of
2^(1/8)) to share bands between windows: a smaller window's band is wider, which only lowers the
rate. ECE uses equal-mass bins by rank (ties kept in one bin), fewer for small cells: one per
``ROWS_PER_BIN`` predictions with outcomes, at most ``calibration_bins``.

What the band does not hold: week-to-week variation of the group's true calibration beyond
sampling (the test period is resampled as if exchangeable). A group with fewer than
``min_outcomes`` test-period predictions gets no band ("no baseline"), nor does a group the
test period never had.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hospital_mlops.monitoring.subgroup_settings import CalibrationSettings

ROWS_PER_BIN = 50  # ECE bins: one per this many predictions with outcomes
DRAWS_PER_TAIL = 3  # a band end is at least the 3rd most extreme draw
MAX_DRAWS = 200_000
_GRID_STEPS_PER_DOUBLING = 8
_CHUNK = 1_000_000  # draws × rows held at once per band


def bins_for(size: int, most: int) -> int:
    return max(1, min(most, size // ROWS_PER_BIN))


def grid_size(m: int) -> int:
    """The largest size of the form floor(2^(j/8)) not above ``m``: bands are shared by windows
    of nearly the same size, always from a size no larger than the cell's."""
    if m < 2:
        return m
    j = math.floor(_GRID_STEPS_PER_DOUBLING * math.log2(m) + 1e-9)
    return min(m, math.floor(2 ** (j / _GRID_STEPS_PER_DOUBLING)))


@dataclass(frozen=True)
class CalibrationStatistics:
    """Per window (or draw): one entry per row of the scores and labels it was computed on."""

    observed: np.ndarray
    expected: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    ece: np.ndarray
    noise: np.ndarray


def calibration_statistics(
    score: np.ndarray, label: np.ndarray, bins: int, ci_level: float
) -> CalibrationStatistics:
    """Per row of ``score``/``label`` (replicates × rows, each row sorted by score): observed
    and expected events, the exact Poisson CI of O/E, the ECE over equal-mass bins by rank
    (tied risks in one bin) and the ECE's sampling noise."""
    b, m = score.shape
    position = np.broadcast_to(np.arange(m), (b, m))
    starts = np.ones((b, m), dtype=bool)
    starts[:, 1:] = score[:, 1:] != score[:, :-1]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    bin_of = first * bins // m
    key = np.arange(b)[:, None] * bins + bin_of
    per_bin = np.bincount(key.ravel(), weights=(label - score).ravel(), minlength=b * bins)
    ece = np.abs(per_bin.reshape(b, bins)).sum(axis=1) / m
    z = float(stats.norm.ppf(1 - (1 - ci_level) / 2))
    noise = z * np.sqrt((score * (1 - score)).sum(axis=1)) / m
    observed = label.sum(axis=1)
    expected = np.maximum(score.sum(axis=1), 1e-12)
    tail = (1 - ci_level) / 2
    low = np.zeros(b)
    some = observed > 0
    low[some] = stats.chi2.ppf(tail, 2 * observed[some]) / 2
    high = stats.chi2.ppf(1 - tail, 2 * observed + 2) / 2
    return CalibrationStatistics(observed, expected, low / expected, high / expected, ece, noise)


# --- the band -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Band:
    """What windows of ``size`` drawn from the validated period show, for one group."""

    size: int
    draws: int
    oe_low: float | None  # None: the declared rate is too small for the draws (never alerts)
    oe_high: float | None
    oe_median: float
    ece_high: float | None
    ece_median: float


@dataclass(frozen=True)
class ValidatedGroup:
    """One group's predictions in the validated (test) period: what its bands are drawn from."""

    score: np.ndarray  # sorted by (score, label)
    label: np.ndarray


def _draws(
    group: ValidatedGroup, m: int, replicates: int, rng: np.random.Generator
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows of ``m`` rows, two-stage: ``m`` slots of a bootstrap copy of the group (a slot
    drawn twice is the same row), each slot an independent uniform row. Rows come back sorted
    by (score, label), as the group is."""
    n = len(group.score)
    per_chunk = max(1, _CHUNK // m)
    for done in range(0, replicates, per_chunk):
        k = min(per_chunk, replicates - done)
        slots = np.sort(rng.integers(0, n, (k, m)), axis=1)
        rows = rng.integers(0, n, (k, m))
        again = np.zeros((k, m), dtype=bool)
        again[:, 1:] = slots[:, 1:] == slots[:, :-1]
        source = np.maximum.accumulate(np.where(again, 0, np.arange(m)), axis=1)
        rows = np.sort(np.take_along_axis(rows, source, axis=1), axis=1)
        yield group.score[rows], group.label[rows]


def draws_needed(alpha: float) -> int:
    return min(MAX_DRAWS, math.ceil(DRAWS_PER_TAIL / (alpha / 2)))


def _rth(values: np.ndarray, r: int, largest: bool) -> float | None:
    if r < 1:
        return None
    ordered = np.sort(values)
    return float(ordered[-r] if largest else ordered[r - 1])


def band_for(
    group: ValidatedGroup, size: int, alpha: float, settings: CalibrationSettings, seed: int
) -> Band:
    replicates = draws_needed(alpha)
    rng = np.random.default_rng([settings.seed, seed, size])
    bins = bins_for(size, settings.calibration_bins)
    parts = [
        calibration_statistics(score, label, bins, settings.ci_level)
        for score, label in _draws(group, size, replicates, rng)
    ]
    low = np.concatenate([p.ci_low for p in parts])
    high = np.concatenate([p.ci_high for p in parts])
    ratio = np.concatenate([p.observed / p.expected for p in parts])
    ece = np.concatenate([p.ece for p in parts])
    beyond_noise = ece - np.concatenate([p.noise for p in parts])
    r_oe = math.floor(alpha / 2 * (replicates + 1))
    r_ece = math.floor(alpha * (replicates + 1))
    return Band(
        size=size,
        draws=replicates,
        oe_low=_round(_rth(high, r_oe, largest=False)),
        oe_high=_round(_rth(low, r_oe, largest=True)),
        oe_median=round(float(np.median(ratio)), 6),
        ece_high=_round(_rth(beyond_noise, r_ece, largest=True)),
        ece_median=round(float(np.median(ece)), 6),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
