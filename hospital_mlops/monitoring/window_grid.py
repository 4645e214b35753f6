"""The monitoring windows' grid: which window a prediction falls in, its rows grouped by window,
and the ISO UTC stamps windows are named by. Shared by the per-window metrics (windows.py), the
break-downs (breakdowns.py), subgroup calibration (subgroup_calibration.py) and the silent-feed
alert (alerts.py), so all of them cut time the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd


def iso_utc(t: pd.Timestamp | datetime) -> str:
    return pd.Timestamp(t).tz_convert(UTC).isoformat().replace("+00:00", "Z")


def window_starts(scored_at: pd.Series, length: timedelta) -> pd.Series:
    """Windows aligned to the epoch, so the same prediction always falls in the same window
    whatever else is in the log."""
    epoch = pd.Timestamp(0, tz=UTC)
    step = pd.Timedelta(length)
    return epoch + ((scored_at - epoch) // step) * step


def sorted_groups(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each distinct key (ascending) with the positions of its rows, in their order: one sort
    for all the groups instead of a boolean mask per group."""
    if len(keys) == 0:
        return
    keys = np.asarray(keys)
    # small keys sort by radix in linear time; a window × group key is small
    small = keys.min() >= 0 and keys.max() < 2**16
    order = np.argsort(keys.astype(np.uint16) if small else keys, kind="stable")
    ordered = keys[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for rows in np.split(order, bounds):
        yield int(keys[rows[0]]), rows
