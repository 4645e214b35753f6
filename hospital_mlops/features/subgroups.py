"""Subgroups: a monitoring break-down's request field and its test-period column mapped to one
group label, so a group means the same in a monitoring window and in the validated (test) period.

The break-downs (``config/monitoring.yaml`` ``breakdowns.by``) name request fields as the EHR
sends them; the test period holds the model's features. A feature set that computes its features
from raw fields says, in its serving recipe, how each such field and its feature become one label
(``ServingRecipe.subgroups``); any other field is compared as text with a test-period column of
its own name, and a field with no such column is "not run". Nothing here names a source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

GROUP_UNKNOWN = "(not sent or unknown)"


@dataclass(frozen=True)
class GroupMap:
    """How a request field and its test-period column become the same group label."""

    column: str  # in test_predictions.parquet
    from_request: Callable[[pd.Series], pd.Series]
    from_column: Callable[[pd.Series], pd.Series]


def as_text(values: pd.Series, missing: tuple[str, ...] = ()) -> pd.Series:
    """Each value as its own group; absent (or one of ``missing``) as the unknown group."""
    absent = values.isna() | values.isin(missing)
    return values.where(~absent, GROUP_UNKNOWN).astype(str)


def text_group_map(request_field: str) -> GroupMap:
    """A field compared as text with a test-period column of its own name."""
    return GroupMap(request_field, as_text, as_text)
