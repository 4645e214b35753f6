"""Gate reports: Markdown for the Kubeflow dashboard, self-contained HTML for humans.

The HTML has inline CSS and no scripts or external assets, so it opens on an air-gapped
hospital network. Reports carry counts and check outcomes only, never identifier values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from hospital_mlops.render.page import page
from hospital_mlops.render.tables import table
from hospital_mlops.validation.checks import GateResult

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1d2733}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
th,td{border:1px solid #d5dbe1;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f1f4f7}.pass{color:#146c2e;font-weight:600}.fail{color:#b42318;font-weight:600}
tr.failed td{background:#fff1f0}code{font-size:.9em}.muted{color:#5b6773}
"""


def _status(success: bool) -> str:
    return "PASSED" if success else "FAILED"


def gate_markdown(result: GateResult) -> str:
    lines = [
        f"# Gate `{result.name}` — {_status(result.success)}",
        "",
        f"Source **{result.source}**, layer **{result.layer}**, suite `{result.suite_version}`, "
        f"{result.checks_run} checks in {result.seconds:.1f} s.",
        "",
        "| batch | rows |",
        "|---|---:|",
        *[f"| {batch} | {rows} |" for batch, rows in sorted(result.rows.items())],
        "",
    ]
    if result.failures:
        lines += [
            "## Failures",
            "",
            "| table | column | expectation | expected | observed | why it matters |",
            "|---|---|---|---|---|---|",
        ]
        for f in result.failures:
            lines.append(
                f"| {f.table} | {f.column or '*'} | `{f.expectation}` | {_md(f.expected)} "
                f"| {_md(f.observed)} | {_md(f.purpose)} |"
            )
    else:
        lines.append("All checks passed.")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def gate_html(result: GateResult) -> str:
    return render_page(f"Gate {result.name}: {_status(result.success)}", [result])


def render_page(title: str, results: Sequence[GateResult], intro: str = "") -> str:
    """The page opens with a summary of every gate; each gate then lists its failures first,
    in full, and its passing checks folded under one line (``<details>``: no script)."""
    esc = html.escape
    body = [f"<h1>{esc(title)}</h1>"]
    if intro:
        body.append(f"<p>{esc(intro)}</p>")
    failed_checks = sum(len([o for o in r.outcomes if not o.success]) for r in results)
    summary = (
        f"{len(results)} gate{'s' if len(results) != 1 else ''}, "
        f"{sum(r.checks_run for r in results)} checks: "
        + (
            f"<span class='fail'>{failed_checks} failed</span>"
            if failed_checks
            else "<span class='pass'>all passed</span>"
        )
    )
    ordered = sorted(results, key=lambda r: (r.success, r.layer, r.name))
    rows = [
        [f"{esc(r.layer)} · {esc(r.name)}", _verdict(r.success, _status(r.success)),
         str(sum(not o.success for o in r.outcomes)), str(r.checks_run)]
        for r in ordered
    ]  # fmt: skip
    classes = ["" if r.success else "failed" for r in ordered]
    body.append(
        f"<h2>Summary</h2><p>{summary}</p>"
        + table(["gate", "result", "failed", "checks"], rows, classes)
    )
    for result in sorted(results, key=lambda r: r.success):
        css = "pass" if result.success else "fail"
        failures = [o for o in result.outcomes if not o.success]
        passing = [o for o in result.outcomes if o.success]
        body.append(
            f"<h2>{esc(result.layer)} · {esc(result.name)} "
            f"<span class='{css}'>{_status(result.success)}</span></h2>"
            f"<p class='muted'>source {esc(result.source)} · suite "
            f"<code>{esc(result.suite_version)}</code> · {result.checks_run} checks · "
            f"{result.seconds:.1f} s · rows: "
            + ", ".join(f"{esc(b)}={n}" for b, n in sorted(result.rows.items()))
            + "</p>"
        )
        if failures:
            body.append(f"<h3>Failed checks ({len(failures)})</h3>")
            body.append(_outcomes_table(failures))
        if passing:
            body.append(
                f"<details><summary>Passing checks ({len(passing)})</summary>"
                f"{_outcomes_table(passing)}</details>"
            )
    return page(title, "\n".join(body), _CSS)


def _verdict(success: bool, text: str) -> str:
    return f"<span class='{'pass' if success else 'fail'}'>{text}</span>"


def _outcomes_table(outcomes: Sequence[Any]) -> str:
    esc = html.escape
    ordered = sorted(outcomes, key=lambda o: (o.table, o.column or "", o.expectation))
    rows = [
        [esc(o.table), esc(o.column or "*"), f"<code>{esc(o.expectation)}</code>",
         esc(o.purpose), esc(o.observed), _verdict(o.success, "pass" if o.success else "FAIL")]
        for o in ordered
    ]  # fmt: skip
    header = ["table", "column", "expectation", "why", "observed", "result"]
    return table(header, rows, ["" if o.success else "failed" for o in ordered])
