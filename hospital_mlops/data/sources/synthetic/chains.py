"""A person's chain of encounters: the bounds of stays and gaps, the intercept that gives the
readmission share, and the chains fitted inside the window."""

from __future__ import annotations

import numpy as np

from hospital_mlops.data.sources.synthetic.arrays import (
    BoolArr,
    FloatArr,
    IntArr,
    segment_starts,
    sigmoid,
)
from hospital_mlops.data.sources.synthetic.times import MINUTES_PER_DAY

LOS_MIN_MINUTES = int(0.55 * MINUTES_PER_DAY)  # 0.5 d plus room for a DST hour
LOS_MAX_DAYS = 29.9
GAP_MIN_MINUTES = MINUTES_PER_DAY // 2  # 12 h between a discharge and the next admit
SHORT_GAP_MAX_MINUTES = 29 * MINUTES_PER_DAY
LONG_GAP_MIN_MINUTES = 32 * MINUTES_PER_DAY
END_MARGIN_MINUTES = 6 * 60  # DST nudges (at most +1 h each) stay inside the window


def solve_intercept(linear: FloatArr, target: float) -> float:
    """The intercept b with mean(sigmoid(b + linear)) == target (bisection; deterministic)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(sigmoid(mid + linear).mean()) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def place_chains(
    rng: np.random.Generator,
    person: IntArr,
    k: IntArr,
    los: IntArr,
    gap: IntArr,
    short: BoolArr,
    avail: int,
) -> tuple[IntArr, IntArr, IntArr]:
    """Fit each person's chain inside [0, avail) minutes; return (admit, los, gap) in minutes.

    Chains that do not fit are squeezed in steps that keep the readmission label whenever
    possible: long gaps first (down to 32 days), then short gaps (down to 12 h), then long gaps
    below 32 days, and finally lengths of stay (down to 0.55 d).
    """
    persons = len(k)
    # Squeeze to a per-person limit a little below the window, so squeezed chains do not all
    # start on the window's first minute.
    limit = avail - np.floor(rng.random(persons) * 0.1 * avail)
    gap_f = gap.astype(np.float64)
    los_f = los.astype(np.float64)
    long_ = ~short & (gap > 0)
    short = short & (gap > 0)

    def squeeze(values: FloatArr, rows: BoolArr, floor: float) -> None:
        need = np.bincount(person, weights=los_f + gap_f, minlength=persons)
        over = np.maximum(need - limit, 0.0)
        if not over.any():
            return
        excess = np.bincount(person, weights=np.where(rows, values - floor, 0.0), minlength=persons)
        frac = np.where(excess > 0, np.clip(1.0 - over / np.maximum(excess, 1e-9), 0.0, 1.0), 1.0)
        f = frac[person]
        values[rows] = floor + (values[rows] - floor) * f[rows]

    squeeze(gap_f, long_, float(LONG_GAP_MIN_MINUTES))
    squeeze(gap_f, short, float(GAP_MIN_MINUTES))
    squeeze(gap_f, long_, float(GAP_MIN_MINUTES))
    squeeze(los_f, np.ones(len(los_f), dtype=bool), float(LOS_MIN_MINUTES))
    gap_out = np.floor(gap_f).astype(np.int64)
    los_out = np.floor(los_f).astype(np.int64)
    seg = los_out + gap_out
    need = np.bincount(person, weights=seg, minlength=persons).astype(np.int64)
    slack = np.maximum(avail - need, 0)
    chain_start = np.floor(rng.random(persons) * (slack + 1)).astype(np.int64)
    within = np.cumsum(seg) - seg
    within -= within[segment_starts(k)][person]
    return chain_start[person] + within, los_out, gap_out
