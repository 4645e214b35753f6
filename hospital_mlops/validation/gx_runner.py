"""Run generated checks with Great Expectations and condense the results into a ``GateResult``.

An ephemeral GX context is used: suites are generated from the catalog on every run, so there is
no GX project on disk to drift from the catalog. GX Data Docs are not built (they pull CDN
assets); ``reports`` renders our own self-contained pages instead.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pandas as pd

from hospital_mlops.quiet import telemetry_off
from hospital_mlops.validation.checks import (
    Check,
    CheckOutcome,
    GateFailure,
    GateResult,
    suite_version,
)

_SAMPLE_VALUES = 5


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _expected(check: Check) -> str:
    kw = check.kwargs
    parts = []
    if "min_value" in kw or "max_value" in kw:
        parts.append(f"between {kw.get('min_value')} and {kw.get('max_value')}")
    if "value_set" in kw:
        values = list(kw["value_set"])
        shown = values if len(values) <= 12 else [*values[:12], "…"]
        parts.append(f"in {shown}")
    if "column_set" in kw:
        parts.append(f"columns {kw['column_set']}")
    if "regex" in kw:
        parts.append(f"matching {kw['regex']}")
    if "type_list" in kw:
        parts.append(f"type in {kw['type_list']}")
    if check.expectation.endswith("ToBeUnique"):
        parts.append("unique")
    if check.expectation == "ExpectColumnValuesToNotBeNull":
        parts.append("not null")
    if "mostly" in kw and kw["mostly"] is not None and kw["mostly"] < 1:
        parts.append(f"for at least {kw['mostly']:.1%} of rows")
    return "; ".join(parts) or check.expectation


def _observed(check: Check, result: Mapping[str, Any], frame: pd.DataFrame) -> str:
    if check.expectation == "ExpectTableColumnsToMatchSet":
        expected = set(check.kwargs["column_set"])
        actual = set(map(str, frame.columns))
        missing, extra = sorted(expected - actual), sorted(actual - expected)
        return f"missing columns {missing}; unexpected columns {extra}"
    if check.expectation == "ExpectTableRowCountToBeBetween":
        return f"{len(frame)} rows"
    if "observed_value" in result and result["observed_value"] is not None:
        value = result["observed_value"]
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    if "unexpected_count" in result:
        count = result.get("unexpected_count") or 0
        pct = result.get("unexpected_percent") or 0.0
        text = f"{count} of {result.get('element_count', len(frame))} rows ({pct:.2f}%) unexpected"
        column = check.kwargs.get("column")
        if column is not None and column in frame.columns and count:
            text += _extent(check, frame[column])
        if not check.sensitive and result.get("partial_unexpected_list"):
            sample = list(dict.fromkeys(map(str, result["partial_unexpected_list"])))
            text += f"; e.g. {sample[:_SAMPLE_VALUES]}"
        return text
    return "not evaluated"


def _extent(check: Check, series: pd.Series) -> str:
    """Observed min/max put a range failure in the data engineer's terms."""
    if check.expectation != "ExpectColumnValuesToBeBetween":
        return ""
    numeric = pd.to_numeric(series, errors="coerce")
    if numeric.notna().any():
        return f"; observed min {numeric.min():.4g}, max {numeric.max():.4g}"
    return ""


def _build_expectation(check: Check, check_id: int) -> Any:
    import great_expectations.expectations as gxe

    cls = getattr(gxe, check.expectation)
    kwargs = {k: v for k, v in check.kwargs.items() if v is not None}
    return cls(**kwargs, meta={"purpose": check.purpose, "check_id": check_id})


def _gx_view(frame: pd.DataFrame, checks: Sequence[Check]) -> pd.DataFrame:
    """The frame as GX handles it best, with every value unchanged.

    Set-membership on object columns is GX's slowest path; as categoricals it ran about twice
    as fast per column in a 1M-row measurement.
    GX checks tz-aware datetime columns element by element and cannot type-check them, so they
    are shown as naive UTC (the same instants, still datetime64)."""
    wanted = {
        str(c.kwargs["column"])
        for c in checks
        if c.expectation == "ExpectColumnValuesToBeInSet" and c.kwargs.get("column") in frame
    }
    converted = {c: frame[c].astype("category") for c in wanted if frame[c].dtype == object}
    for col in frame.columns:
        if isinstance(frame[col].dtype, pd.DatetimeTZDtype):
            converted[col] = frame[col].dt.tz_convert("UTC").dt.tz_localize(None)
    return frame.assign(**converted) if converted else frame


def _referenced(check: Check) -> set[str] | None:
    """The columns a check reads, or None when it looks at the whole table."""
    kw = check.kwargs
    cols = {kw[k] for k in ("column", "column_A", "column_B") if k in kw}
    cols |= set(kw.get("column_list", ())) | set(check.columns)
    return {str(c) for c in cols} or None


def _needed_columns(frame: pd.DataFrame, checks: Sequence[Check]) -> pd.DataFrame:
    """Hand GX only the columns the checks read: its per-batch cost grows with the frame's
    width (it profiles every column's type), not with the number of checks."""
    needed: set[str] = set()
    for check in checks:
        cols = _referenced(check)
        if cols is None:
            return frame
        needed |= cols
    return frame[[c for c in frame.columns if c in needed]]


def _applicable(check: Check, frame: pd.DataFrame | None) -> bool:
    if frame is None:
        frame = pd.DataFrame()
    return all(c in frame.columns for c in _referenced(check) or ())


# Batches of a large gate are split over the machine's cores: each worker is a forked copy that
# validates its share with its own ephemeral GX context. Below this many rows, forking costs more.
PARALLEL_ROWS = 400_000
Unit = tuple[str, int]  # (batch, index of its column group)
_FORK_FRAMES: Mapping[str, pd.DataFrame] = {}
_FORK_GROUPS: Mapping[Unit, Sequence[Check]] = {}


def warm_up() -> None:
    """Start importing Great Expectations in the background (it takes seconds) while the caller
    reads and transforms data; ``run_gate`` waits for it before validating or forking."""
    threading.Thread(target=_import_gx, name="gx-import", daemon=True).start()


def _import_gx() -> None:
    telemetry_off()  # GX reads GX_ANALYTICS_ENABLED when a context is made
    import great_expectations  # noqa: F401
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every in-memory batch with an md5 over all its values (a batch marker we
    # never read: our snapshots are already sha256-addressed). On the 1M-encounter raw gate that
    # hashing was a fifth of the gate's time (22.3 s -> 17.9 s serial without it).
    pandas_execution_engine.HASH_THRESHOLD = 0


def run_gate(
    *,
    source: str,
    layer: str,
    name: str,
    frames: Mapping[str, pd.DataFrame],
    checks: Sequence[Check],
) -> GateResult:
    """Validate every batch with its checks. A check on a column that is absent is skipped: the
    schema check on that table already reports the missing column once, by name."""
    started = time.perf_counter()
    _import_gx()  # never fork while another thread is still importing
    by_batch: dict[str, list[Check]] = defaultdict(list)
    for check in checks:
        by_batch[check.batch].append(check)
    rows = {b: len(frames[b]) if b in frames else 0 for b in by_batch}
    groups = {
        (batch, i): group
        for batch in sorted(by_batch)
        for i, group in enumerate(
            _column_groups(
                [c for c in by_batch[batch] if _applicable(c, frames.get(batch))],
                rows[batch] * (frames[batch].shape[1] if batch in frames else 0),
            )
        )
    }
    cost = {unit: rows[unit[0]] * len(group) for unit, group in groups.items()}
    workers = os.cpu_count() or 1
    shares = _partition(cost, workers) if sum(rows.values()) >= PARALLEL_ROWS else []
    if len(shares) > 1:
        global _FORK_FRAMES, _FORK_GROUPS
        _FORK_FRAMES, _FORK_GROUPS = frames, groups
        context = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(max_workers=len(shares), mp_context=context) as pool:
                parts = list(
                    pool.map(_validate_share, [source] * len(shares), [layer] * len(shares), shares)
                )
        finally:
            _FORK_FRAMES, _FORK_GROUPS = {}, {}
    else:
        parts = [_validate_units(source, layer, frames, groups, sorted(groups))]
    outcomes = sorted((o for part in parts for o in part[0]), key=lambda o: o.table)
    failures = sorted((f for part in parts for f in part[1]), key=lambda f: f.table)
    return GateResult(
        source=source,
        layer=layer,
        name=name,
        success=not failures,
        suite_version=suite_version(checks),
        checks_run=len(outcomes),
        failures=failures,
        outcomes=outcomes,
        rows=rows,
        seconds=round(time.perf_counter() - started, 3),
    )


def _partition(cost: Mapping[Unit, int], workers: int) -> list[list[Unit]]:
    """Greedy split of work units into shares of similar cost (deterministic)."""
    shares: list[list[Unit]] = [[] for _ in range(max(1, min(workers, 8)))]
    loads = [0] * len(shares)
    for unit in sorted(cost, key=lambda u: (-cost[u], u)):
        lightest = loads.index(min(loads))
        shares[lightest].append(unit)
        loads[lightest] += cost[unit]
    return [sorted(s) for s in shares if s]


def _validate_share(
    source: str, layer: str, units: list[Unit]
) -> tuple[list[CheckOutcome], list[GateFailure]]:
    return _validate_units(source, layer, _FORK_FRAMES, _FORK_GROUPS, units)


def _validate_units(
    source: str,
    layer: str,
    frames: Mapping[str, pd.DataFrame],
    groups: Mapping[Unit, Sequence[Check]],
    units: Sequence[Unit],
) -> tuple[list[CheckOutcome], list[GateFailure]]:
    telemetry_off()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasource = context.data_sources.add_pandas(f"{source}-{layer}")
    failures: list[GateFailure] = []
    outcomes: list[CheckOutcome] = []
    for index, (batch, number) in enumerate(units):
        group = list(groups[(batch, number)])
        frame = frames.get(batch)
        if frame is None:
            frame = pd.DataFrame()
        asset = datasource.add_dataframe_asset(f"b{index}")
        definition = asset.add_batch_definition_whole_dataframe("whole")
        name = f"{layer}.{batch}.{number}"
        suite = context.suites.add(gx.ExpectationSuite(name=name))
        for check_id, check in enumerate(group):
            suite.add_expectation(_build_expectation(check, check_id))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=definition, suite=suite)
        )
        view = _gx_view(_needed_columns(frame, group), group)
        run = validation.run(batch_parameters={"dataframe": view}, result_format="BASIC")
        for check, res in zip(group, _ordered_results(group, run.results), strict=True):
            outcome, failure = _condense(source, layer, batch, check, res, frame)
            outcomes.append(outcome)
            if failure is not None:
                failures.append(failure)
    return outcomes, failures


GROUP_CELLS = 2_500_000


def _column_groups(checks: Sequence[Check], cells: int) -> list[list[Check]]:
    """Checks grouped by the columns they read. GX's per-check cost grows with the size of the
    frame it is given (row filtering copies every column), so on a large batch (rows × columns)
    each group gets only its own columns; on a small one the fixed cost of a validation run
    dominates, so the batch stays whole."""
    if cells < GROUP_CELLS:
        return [list(checks)] if checks else []
    groups: dict[tuple[str, ...], list[Check]] = {}
    for check in checks:
        cols = _referenced(check)
        groups.setdefault(tuple(sorted(cols)) if cols else ("*",), []).append(check)
    return [groups[k] for k in sorted(groups)]


def _condense(
    source: str, layer: str, batch: str, check: Check, res: Any, frame: pd.DataFrame
) -> tuple[CheckOutcome, GateFailure | None]:
    observed = _observed(check, res.result or {}, frame)
    if res.exception_info and res.exception_info.get("raised_exception"):
        observed = f"check could not run: {res.exception_info.get('exception_message')}"
    outcome = CheckOutcome(
        table=batch,
        column=check.column,
        expectation=_snake(check.expectation),
        purpose=check.purpose,
        success=bool(res.success),
        observed=observed,
    )
    if res.success:
        return outcome, None
    failure = GateFailure(
        source=source,
        layer=layer,
        table=batch,
        column=check.column,
        expectation=outcome.expectation,
        observed=observed,
        purpose=check.purpose,
        expected=_expected(check),
    )
    return outcome, failure


def _ordered_results(checks: Sequence[Check], results: Sequence[Any]) -> list[Any]:
    """GX returns results in its own order; match them back to our checks by the id in meta."""
    by_id = {int(res.expectation_config.meta["check_id"]): res for res in results}
    missing = [c.expectation for i, c in enumerate(checks) if i not in by_id]
    if missing:
        raise RuntimeError(f"Great Expectations returned no result for {missing}")
    return [by_id[i] for i in range(len(checks))]
