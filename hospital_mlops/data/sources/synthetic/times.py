"""Time in the synthetic extract: the units, and the conversions from a site's wall clock to UTC
(DST gaps and folds come back as NaT) and from epoch seconds to UTC timestamps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hospital_mlops.data.sources.synthetic.arrays import IntArr
from hospital_mlops.data.sources.synthetic.vocabulary import SITE_TIMEZONES, SITES

MINUTE = 60  # seconds
MINUTES_PER_DAY = 1440
NS_PER_S = 1_000_000_000


def utc_from_seconds(seconds: IntArr) -> pd.DatetimeIndex:
    """Epoch seconds as tz-aware UTC datetime64[ns]."""
    ns = np.asarray(seconds, dtype=np.int64) * NS_PER_S
    return pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC")


def site_clock_to_utc_ns(local_ns: IntArr, site: IntArr) -> IntArr:
    """Site wall clock → UTC epoch ns; DST-gap and DST-fold times come back as NaT (int64 min)."""
    out = np.full(len(local_ns), np.iinfo(np.int64).min, dtype=np.int64)
    for tz in sorted(set(SITE_TIMEZONES.values())):
        rows = np.isin(site, [i for i, s in enumerate(SITES) if SITE_TIMEZONES[s] == tz])
        if not rows.any():
            continue
        idx = pd.DatetimeIndex(local_ns[rows].view("M8[ns]")).tz_localize(
            tz, ambiguous="NaT", nonexistent="NaT"
        )
        out[rows] = idx.asi8
    return out
