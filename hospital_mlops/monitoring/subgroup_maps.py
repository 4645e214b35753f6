"""Labelling logged requests by subgroup: each distinct value mapped once. How a request field
and its test-period column become one label is the served feature set's (``ServedInputs.group_map``,
``hospital_mlops.features.subgroups``): monitoring names no source's fields.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def mapped_labels(values: pd.Series, mapping: Callable[[pd.Series], pd.Series]) -> np.ndarray:
    """Each row's group label, mapping each distinct value once (a log holds millions of rows
    and a handful of values)."""
    codes, uniques = pd.factorize(values.astype(object))
    mapped = mapping(pd.Series([*uniques, None], dtype=object)).to_numpy(dtype=object)
    return np.asarray(mapped[np.where(codes < 0, len(uniques), codes)], dtype=object)
