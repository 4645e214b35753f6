"""A patient's history from the encounters around each one: prior encounters, days since the
last, and whether another follows within the readmission window."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hospital_mlops.features.base import READMISSION_WINDOW_DAYS

_SPAN = 1 << 42  # seconds (~139,000 years): above any time or window used here
DAY = 86_400


def history(
    patient: pd.Series, start: np.ndarray, end: np.ndarray, window: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per encounter: prior encounters ending in [start - window, start) (all earlier ones when
    ``window`` is None), days since the last one ended, and whether the same patient starts
    another within ``READMISSION_WINDOW_DAYS`` of this one's end.

    Only encounters that ended before this one started count as history: nothing from the future
    leaks into a feature. ``start``/``end`` are int64 seconds in [0, _SPAN); keys are exact
    integers (patient code × _SPAN + time), so results do not depend on which other patients
    are in the extract.
    """
    codes, _ = pd.factorize(patient)
    base = codes.astype("int64") * _SPAN
    start = np.asarray(start, dtype="int64")
    end = np.asarray(end, dtype="int64")
    end_keys = np.sort(base + end)
    start_keys = np.sort(base + start)
    this_start = base + start
    first = np.searchsorted(end_keys, base, side="left")
    lo = first if window is None else np.searchsorted(end_keys, this_start - window, side="left")
    hi = np.searchsorted(end_keys, this_start, side="left")
    prior = (hi - lo).astype("int64")
    has_prior = hi > first
    last_end = end_keys[np.maximum(hi - 1, 0)] - base
    since = np.where(has_prior, (start - last_end) / DAY, np.nan)
    this_end = base + end
    nxt = np.searchsorted(start_keys, this_end, side="right")
    nxt_key = start_keys[np.minimum(nxt, len(start_keys) - 1)]
    same_patient = (nxt < len(start_keys)) & (nxt_key < base + _SPAN)
    readmit = same_patient & (nxt_key - this_end <= READMISSION_WINDOW_DAYS * DAY)
    return prior, since, readmit
