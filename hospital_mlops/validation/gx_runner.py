"""Run generated checks with Great Expectations and condense the results into a ``GateResult``.

An ephemeral GX context is used: suites are generated from the catalog on every run, so there is
no GX project on disk to drift from the catalog. GX Data Docs are not built (they pull CDN
assets); ``reports`` renders our own self-contained pages instead.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hospital_mlops.validation.checks import (
    Check,
    CheckOutcome,
    GateFailure,
    GateResult,
    suite_version,
)

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
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

    Set-membership on object columns is GX's slowest path; as categoricals it is ~8x faster.
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


def _applicable(check: Check, frame: pd.DataFrame) -> bool:
    wanted = [check.kwargs.get("column"), *check.columns]
    return all(c is None or c in frame.columns for c in wanted)


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
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    started = time.perf_counter()
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    datasource = context.data_sources.add_pandas(f"{source}-{layer}")

    by_batch: dict[str, list[Check]] = defaultdict(list)
    for check in checks:
        by_batch[check.batch].append(check)

    failures: list[GateFailure] = []
    outcomes: list[CheckOutcome] = []
    rows: dict[str, int] = {}
    for index, (batch, batch_checks) in enumerate(sorted(by_batch.items())):
        frame = frames.get(batch)
        if frame is None:
            frame = pd.DataFrame()
        rows[batch] = len(frame)
        runnable = [c for c in batch_checks if _applicable(c, frame)]
        if not runnable:
            continue
        asset = datasource.add_dataframe_asset(f"b{index}")
        definition = asset.add_batch_definition_whole_dataframe("whole")
        suite = context.suites.add(gx.ExpectationSuite(name=f"{layer}.{batch}"))
        for check_id, check in enumerate(runnable):
            suite.add_expectation(_build_expectation(check, check_id))
        validation = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{layer}.{batch}", data=definition, suite=suite)
        )
        run = validation.run(
            batch_parameters={"dataframe": _gx_view(frame, runnable)},
            result_format="BASIC",
        )
        for check, res in zip(runnable, _ordered_results(runnable, run.results), strict=True):
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
            outcomes.append(outcome)
            if not res.success:
                failures.append(
                    GateFailure(
                        source=source,
                        layer=layer,
                        table=batch,
                        column=check.column,
                        expectation=outcome.expectation,
                        observed=observed,
                        purpose=check.purpose,
                        expected=_expected(check),
                    )
                )
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


def _ordered_results(checks: Sequence[Check], results: Sequence[Any]) -> list[Any]:
    """GX returns results in its own order; match them back to our checks by the id in meta."""
    by_id = {int(res.expectation_config.meta["check_id"]): res for res in results}
    missing = [c.expectation for i, c in enumerate(checks) if i not in by_id]
    if missing:
        raise RuntimeError(f"Great Expectations returned no result for {missing}")
    return [by_id[i] for i in range(len(checks))]
