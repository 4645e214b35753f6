"""Per-window break-downs by subgroup, site or service line: the request's own fields, as the
EHR sent them (``config/monitoring.yaml`` ``breakdowns``).

A cell is one window × one group. It reports volume, alert rate and, once outcomes have arrived,
expected against observed events and AUROC (a point estimate: the window-level numbers carry
the CIs). A cell with fewer predictions than ``small_cell_min`` is suppressed: its numbers are
not shown, only that it exists, so a report cannot single out a handful of patients.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.monitoring.policy import MonitoringPolicy

MISSING = "(not sent)"


@dataclass(frozen=True)
class Cell:
    window_start: str
    breakdown: str
    group: str
    suppressed: bool
    n: int | None
    n_outcomes: int | None
    alerts_per_100: float | None
    expected_event_rate: float | None
    observed_event_rate: float | None
    observed_to_expected: float | None
    auroc: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def json_field(engine: sa.Engine, column: Any, field: str) -> Any:
    """``column`` (JSON text) → the value of ``field`` as text, in the database's own JSON
    functions (SQLite ``json_extract``; PostgreSQL ``->>``), so a million rows are not parsed
    in Python."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB

        return sa.cast(column, JSONB)[field].astext
    return sa.type_coerce(column, sa.JSON)[field].as_string()


def request_fields(groups: dict[str, str]) -> list[str]:
    """The request fields the break-downs read (name → field), each once: all a monitoring run
    takes out of the logged requests."""
    return list(dict.fromkeys(groups.values()))


def _cell(
    start: str,
    name: str,
    group: str,
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    policy: MonitoringPolicy,
) -> Cell:
    risk, alert, outcome = rows
    n = len(risk)
    if n < policy.breakdowns.small_cell_min:
        return Cell(start, name, group, True, None, None, None, None, None, None, None)
    known = ~np.isnan(outcome)
    y = outcome[known]
    observed = observed_to_expected = auroc = None
    if known.sum() >= policy.breakdowns.small_cell_min:
        observed = round(float(y.mean()), 6)
        observed_to_expected = round(float(y.mean() / risk[known].mean()), 6)
        if known.sum() >= policy.windows.min_outcomes and 0 < y.sum() < len(y):
            scored = weighted.Scored.of(y, risk[known])
            auroc = round(float(weighted.auroc(scored, np.ones((1, len(y))))[0]), 6)
    return Cell(
        window_start=start,
        breakdown=name,
        group=group,
        suppressed=False,
        n=n,
        n_outcomes=int(known.sum()),
        alerts_per_100=round(100 * float(alert.mean()), 4),
        expected_event_rate=round(float(risk.mean()), 6),
        observed_event_rate=observed,
        observed_to_expected=observed_to_expected,
        auroc=auroc,
    )


def _group_labels(column: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Each row's group as an index into the sorted group names; a field the request did not
    send is the group ``MISSING``."""
    codes, uniques = pd.factorize(column)
    names = [str(u) for u in uniques] + [MISSING]
    ordered = sorted(set(names))
    position = np.array([ordered.index(label) for label in names])
    return position[np.where(codes < 0, len(uniques), codes)], ordered


def breakdown_cells(predictions: pd.DataFrame, policy: MonitoringPolicy) -> list[Cell]:
    """``predictions``: ``scored_at``, ``risk``, ``alert``, ``outcome`` and one text column per
    configured break-down (missing where the request did not send the field). Cells come
    break-down by break-down, then window by window, groups in name order."""
    from hospital_mlops.monitoring.window_grid import iso_utc, sorted_groups, window_starts

    if predictions.empty or not policy.breakdowns.by:
        return []
    starts = window_starts(predictions["scored_at"], timedelta(hours=policy.windows.length_hours))
    window, window_start = pd.factorize(starts, sort=True)
    risk = predictions["risk"].to_numpy(dtype="float64")
    alert = predictions["alert"].to_numpy(dtype=bool)
    outcome = predictions["outcome"].to_numpy(dtype="float64")

    def cells_of(name: str) -> list[Cell]:
        group, labels = _group_labels(predictions[name])
        return [
            _cell(
                iso_utc(window_start[key // len(labels)]),
                name,
                labels[key % len(labels)],
                (risk[rows], alert[rows], outcome[rows]),
                policy,
            )
            for key, rows in sorted_groups(window * len(labels) + group)
            if key >= 0  # a NaT window
        ]

    # numpy sorts and reduces outside the GIL: the break-downs share the cores
    with ThreadPoolExecutor(
        max_workers=min(len(policy.breakdowns.by), os.cpu_count() or 1)
    ) as pool:
        per_breakdown = list(pool.map(cells_of, policy.breakdowns.by))
    return [cell for cells in per_breakdown for cell in cells]
