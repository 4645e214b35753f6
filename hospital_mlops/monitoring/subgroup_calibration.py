"""Calibration per subgroup once the label has matured: per window and configured subgroup,
observed against expected events (O/E, exact Poisson CI) and the expected calibration error
(ECE), each against the subgroup's band from the registered version's validated (test) period.
Pure: frames in, dataclasses out.

The label delay. A prediction's outcome (readmitted within ``outcome_horizon_days`` of discharge)
is known only that long after it was scored. A window is assessed once its end lies at least
``outcome_horizon_days`` before the run's ``now`` *and* at least ``min_outcomes`` of its
predictions have their outcome; before that it is "pending" (the horizon has not passed) or "not
run" (the outcomes have not come in), never a pass.

Small cells. A cell (window × subgroup × group) is suppressed, listed only as existing, when it
has fewer than ``small_cell_min`` predictions, predictions with outcomes, or (from 1) observed
events: an O/E and its exact CI give the events back. Zero events are shown.

The groups are mapped in subgroup_maps.py, the settings checked in subgroup_settings.py, the
bands drawn (and the rule and its false-alarm rate explained) in subgroup_bands.py, and the
results are the dataclasses of subgroup_results.py.
"""

from __future__ import annotations

import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from hospital_mlops.model.evaluate.columns import LABEL, SCORE
from hospital_mlops.monitoring.subgroup_bands import (
    Band,
    ValidatedGroup,
    band_for,
    bins_for,
    calibration_statistics,
    grid_size,
)
from hospital_mlops.monitoring.subgroup_maps import mapped_labels
from hospital_mlops.monitoring.subgroup_results import (
    BreakdownStatus,
    CalibrationCell,
    SubgroupAlert,
    SubgroupCalibration,
    WindowCalibration,
)
from hospital_mlops.monitoring.subgroup_settings import CalibrationSettings
from hospital_mlops.monitoring.window_grid import iso_utc, sorted_groups, window_starts


def _not_run(settings: CalibrationSettings, reason: str) -> SubgroupCalibration:
    return SubgroupCalibration(
        "not_run", reason, settings.false_alarm_rate, 0, None, settings.ci_level, [], [], []
    )


def _test_groups(
    test_period: pd.DataFrame, settings: CalibrationSettings
) -> tuple[list[BreakdownStatus], dict[tuple[str, str], ValidatedGroup]]:
    score = pd.to_numeric(test_period[SCORE], errors="coerce").to_numpy("float64")
    label = pd.to_numeric(test_period[LABEL], errors="coerce").to_numpy("float64")
    usable = ~np.isnan(score) & ~np.isnan(label)
    statuses, groups = [], {}
    for name, request_field in settings.groups.items():
        mapping = settings.group_map(request_field)
        if mapping.column not in test_period.columns:
            statuses.append(
                BreakdownStatus(
                    name,
                    request_field,
                    mapping.column,
                    "not_run",
                    f"the test-period predictions have no column {mapping.column!r} (for the "
                    f"request field {request_field!r})",
                    [],
                    [],
                )
            )
            continue
        labels = mapped_labels(test_period[mapping.column], mapping.from_column)
        banded, without = [], []
        for group in sorted(set(labels[usable])):
            rows = usable & (labels == group)
            if rows.sum() < settings.min_outcomes:
                without.append(str(group))
                continue
            order = np.lexsort((label[rows], score[rows]))
            groups[(name, str(group))] = ValidatedGroup(score[rows][order], label[rows][order])
            banded.append(str(group))
        statuses.append(
            BreakdownStatus(name, request_field, mapping.column, "run", None, banded, without)
        )
    return statuses, groups


def _check_test_period(test_period: pd.DataFrame | None) -> str | None:
    if test_period is None:
        return "the registered version has no test-period predictions to set bands from"
    missing = [c for c in (LABEL, SCORE) if c not in test_period.columns]
    if missing:
        return f"the test-period predictions lack {', '.join(missing)}"
    label = pd.to_numeric(test_period[LABEL], errors="coerce").dropna()
    if label.empty or not label.isin([0, 1]).all():
        return "the test-period labels are not 0/1"
    score = pd.to_numeric(test_period[SCORE], errors="coerce").dropna()
    if score.empty or not ((score >= 0) & (score <= 1)).all():
        return "the test-period scores are not risks in [0, 1]"
    return None


@dataclass(frozen=True)
class _Pending:
    """A cell whose numbers are in and whose band is still to be drawn."""

    start: str
    end: str
    name: str
    group: str
    n: int
    score: np.ndarray  # its predictions with outcomes, sorted by (risk, outcome)
    label: np.ndarray
    size: int


def _first_pass(
    key: int,
    rows: np.ndarray,
    starts: pd.DatetimeIndex,
    frame: tuple[np.ndarray, np.ndarray],
    labels: dict[str, np.ndarray],
    settings: CalibrationSettings,
    now: pd.Timestamp,
    banded: dict[tuple[str, str], ValidatedGroup],
) -> tuple[WindowCalibration, list[CalibrationCell | _Pending]]:
    risk, outcome = frame
    start = pd.Timestamp(starts[key])
    end = start + pd.Timedelta(hours=settings.window_hours)
    matures = end + pd.Timedelta(days=settings.outcome_horizon_days)
    span = (iso_utc(start), iso_utc(end), iso_utc(matures))
    if matures > now:
        reason = (
            f"outcomes mature on {span[2][:10]} ({settings.outcome_horizon_days} days after "
            "the window ends)"
        )
        return WindowCalibration(*span, "pending", reason, []), []
    if (~np.isnan(outcome[rows])).sum() < settings.min_outcomes:
        reason = (
            f"the outcome horizon has passed but fewer than {settings.min_outcomes} of the "
            "window's predictions have outcomes"
        )
        return WindowCalibration(*span, "not_run", reason, []), []
    small = settings.small_cell_min
    cells: list[CalibrationCell | _Pending] = []
    for name, all_labels in labels.items():
        window_labels = all_labels[rows]
        for group in sorted(set(window_labels)):
            member = rows[window_labels == group]
            y = outcome[member]
            with_outcome = ~np.isnan(y)
            n, m = len(member), int(with_outcome.sum())
            events = int(y[with_outcome].sum())
            if n < small or 0 < m < small or 0 < events < small:
                cells.append(CalibrationCell(span[0], name, group, "suppressed"))
            elif m == 0:
                cells.append(
                    CalibrationCell(span[0], name, group, "no_outcomes", n=n, n_outcomes=0)
                )
            elif (name, group) not in banded:
                cells.append(
                    CalibrationCell(
                        span[0],
                        name,
                        group,
                        "no_baseline",
                        n=n,
                        n_outcomes=m,
                        observed_events=events,
                    )
                )
            else:
                r, o = risk[member][with_outcome], y[with_outcome]
                order = np.lexsort((o, r))
                cells.append(_Pending(*span[:2], name, group, n, r[order], o[order], grid_size(m)))
    return WindowCalibration(*span, "run", None, []), cells


def _assess(
    cell: _Pending, band: Band, settings: CalibrationSettings
) -> tuple[CalibrationCell, list[SubgroupAlert]]:
    bins = bins_for(cell.size, settings.calibration_bins)
    s = calibration_statistics(cell.score[None, :], cell.label[None, :], bins, settings.ci_level)
    ratio = float(s.observed[0] / s.expected[0])
    low, high = float(s.ci_low[0]), float(s.ci_high[0])
    ece, noise = float(s.ece[0]), float(s.noise[0])
    level = f"{settings.ci_level:.0%}"
    where = f"window {cell.start[:10]}–{cell.end[:10]}: {cell.name}={cell.group}"
    ci = f"O/E {ratio:.2f} ({level} CI {low:.2f}–{high:.2f})"
    of = f"the validated period's band for windows of {band.size}"
    found: list[tuple[str, str]] = []
    if band.oe_high is not None and low > band.oe_high:
        found.append(
            (
                "observed_to_expected_high",
                f"{where}: {ci} wholly above {of} ({band.oe_low}–{band.oe_high}): "
                "more outcomes than predicted",
            )
        )
    if band.oe_low is not None and high < band.oe_low:
        found.append(
            (
                "observed_to_expected_low",
                f"{where}: {ci} wholly below {of} ({band.oe_low}–{band.oe_high}): "
                "fewer outcomes than predicted",
            )
        )
    if band.ece_high is not None and ece - noise > band.ece_high:
        found.append(
            (
                "ece",
                f"{where}: ECE {ece:.3f} exceeds {of} (upper end {band.ece_high:.3f}) by "
                f"more than its sampling noise ({noise:.3f})",
            )
        )
    done = CalibrationCell(
        window_start=cell.start,
        breakdown=cell.name,
        group=cell.group,
        status="alert" if found else "pass",
        n=cell.n,
        n_outcomes=len(cell.score),
        observed_events=int(s.observed[0]),
        expected_events=round(float(s.expected[0]), 4),
        observed_to_expected=round(ratio, 6),
        oe_ci=[round(low, 6), round(high, 6)],
        ece=round(ece, 6),
        ece_noise=round(noise, 6),
        bins=bins,
        band=band,
        alerts=[statistic for statistic, _ in found],
    )
    alerts = [SubgroupAlert(cell.start, cell.name, cell.group, st, msg) for st, msg in found]
    return done, alerts


def subgroup_calibration(
    predictions: pd.DataFrame,
    test_period: pd.DataFrame | None,
    settings: CalibrationSettings,
    now: datetime,
) -> SubgroupCalibration:
    """``predictions``: ``scored_at`` (UTC), ``risk``, ``outcome`` (1.0 / 0.0, NaN until known)
    and one column per break-down (the request field as sent). ``test_period``: the registered
    version's ``test_predictions.parquet`` (``label``, ``score``, the subgroup columns).
    ``now``: the monitoring run's time, which decides which windows have matured. Inputs that
    cannot be assessed give "not run" with the reason, never an exception; only a setting out
    of range raises (``SubgroupCalibrationError``)."""
    problem = _check_test_period(test_period)
    if problem is not None:
        return _not_run(settings, problem)
    assert test_period is not None
    needed = [c for c in ("scored_at", "risk", "outcome") if c not in predictions.columns]
    if needed:
        return _not_run(settings, f"the logged predictions lack {', '.join(needed)}")
    if predictions.empty:
        return _not_run(settings, "no logged predictions")
    statuses, banded = _test_groups(test_period, settings)
    for i, status in enumerate(statuses):
        if status.status == "run" and status.breakdown not in predictions.columns:
            statuses[i] = BreakdownStatus(
                status.breakdown,
                status.request_field,
                status.column,
                "not_run",
                f"the logged predictions lack the break-down {status.breakdown!r}",
                [],
                [],
            )
    running = [s for s in statuses if s.status == "run"]
    tests = 2 * sum(len(s.banded_groups) for s in running)
    if tests == 0:
        return SubgroupCalibration(
            "not_run",
            "no configured subgroup has a band (each needs a test-period column and at least "
            f"{settings.min_outcomes} test-period predictions in a group)",
            settings.false_alarm_rate,
            0,
            None,
            settings.ci_level,
            statuses,
            [],
            [],
        )
    alpha = settings.false_alarm_rate / tests
    banded = {k: v for k, v in banded.items() if any(k[0] == s.breakdown for s in running)}
    stamp = pd.Timestamp(now)
    stamp = stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp
    starts = window_starts(predictions["scored_at"], timedelta(hours=settings.window_hours))
    window, window_start = pd.factorize(starts, sort=True)
    frame = (
        predictions["risk"].to_numpy(dtype="float64"),
        predictions["outcome"].to_numpy(dtype="float64"),
    )
    labels = {
        s.breakdown: mapped_labels(
            predictions[s.breakdown], settings.group_map(s.request_field).from_request
        )
        for s in running
    }
    index = pd.DatetimeIndex(window_start)
    first = [
        _first_pass(key, rows, index, frame, labels, settings, stamp, banded)
        for key, rows in sorted_groups(window)
        if key >= 0  # a NaT window
    ]
    wanted = sorted(
        {(c.name, c.group, c.size) for _, cells in first for c in cells if isinstance(c, _Pending)}
    )

    def draw(want: tuple[str, str, int]) -> Band:
        name, group, size = want
        return band_for(
            banded[(name, group)], size, alpha, settings, zlib.crc32(f"{name}\0{group}".encode())
        )

    # draws are numpy sorts and gathers, outside the GIL: the bands share the cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(wanted), os.cpu_count() or 1))) as pool:
        bands = dict(zip(wanted, pool.map(draw, wanted), strict=True))
    windows, alerts = [], []
    for w, cells in first:
        done: list[CalibrationCell] = []
        for c in cells:
            if isinstance(c, _Pending):
                cell, raised = _assess(c, bands[(c.name, c.group, c.size)], settings)
                done.append(cell)
                alerts.extend(raised)
            else:
                done.append(c)
        windows.append(WindowCalibration(w.start, w.end, w.matures_at, w.status, w.reason, done))
    return SubgroupCalibration(
        "run",
        None,
        settings.false_alarm_rate,
        tests,
        alpha,
        settings.ci_level,
        statuses,
        windows,
        alerts,
    )
