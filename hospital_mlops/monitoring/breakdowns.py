"""Per-window break-downs by subgroup, site or service line: the request's own fields, as the
EHR sent them (``config/monitoring.yaml`` ``breakdowns``).

A cell is one window × one group. It reports volume, alert rate and, once outcomes have arrived,
expected against observed events and AUROC (a point estimate: the window-level numbers carry
the CIs). A cell with fewer predictions than ``small_cell_min`` is suppressed: its numbers are
not shown, only that it exists, so a report cannot single out a handful of patients.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa

from hospital_mlops.evaluate import weighted
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


def _cell(start: str, name: str, group: str, rows: pd.DataFrame, policy: MonitoringPolicy) -> Cell:
    n = len(rows)
    if n < policy.breakdowns.small_cell_min:
        return Cell(start, name, group, True, None, None, None, None, None, None, None)
    risk = rows["risk"].to_numpy(dtype="float64")
    known = rows["outcome"].notna().to_numpy()
    y = rows["outcome"].to_numpy(dtype="float64")[known]
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
        alerts_per_100=round(100 * float(rows["alert"].astype(bool).mean()), 4),
        expected_event_rate=round(float(risk.mean()), 6),
        observed_event_rate=observed,
        observed_to_expected=observed_to_expected,
        auroc=auroc,
    )


def breakdown_cells(predictions: pd.DataFrame, policy: MonitoringPolicy) -> list[Cell]:
    """``predictions``: ``scored_at``, ``risk``, ``alert``, ``outcome`` and one text column per
    configured break-down (``None`` where the request did not send the field)."""
    from hospital_mlops.monitoring.windows import _iso, window_starts

    if predictions.empty or not policy.breakdowns.by:
        return []
    starts = window_starts(predictions["scored_at"], timedelta(hours=policy.windows.length_hours))
    cells = []
    for name in policy.breakdowns.by:
        groups = predictions[name].fillna(MISSING).astype(str)
        for (start, group), rows in predictions.groupby([starts, groups], sort=True):
            cells.append(_cell(_iso(start), name, group, rows, policy))
    return cells
