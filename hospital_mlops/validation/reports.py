"""Gate reports: Markdown for the Kubeflow dashboard, self-contained HTML for humans.

The HTML has inline CSS and no scripts or external assets, so it opens on an air-gapped
hospital network. Reports carry counts and check outcomes only, never identifier values.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from hospital_mlops.render.page import page
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
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(f"<p>{html.escape(intro)}</p>")
    for result in results:
        css = "pass" if result.success else "fail"
        body.append(
            f"<h2>{html.escape(result.layer)} · {html.escape(result.name)} "
            f"<span class='{css}'>{_status(result.success)}</span></h2>"
            f"<p class='muted'>source {html.escape(result.source)} · suite "
            f"<code>{html.escape(result.suite_version)}</code> · {result.checks_run} checks · "
            f"{result.seconds:.1f} s · rows: "
            + ", ".join(f"{html.escape(b)}={n}" for b, n in sorted(result.rows.items()))
            + "</p>"
        )
        body.append(
            "<table><tr><th>table</th><th>column</th><th>expectation</th><th>why</th>"
            "<th>observed</th><th>result</th></tr>"
        )
        for o in sorted(result.outcomes, key=lambda o: (o.success, o.table, o.column or "")):
            body.append(
                f"<tr class='{'' if o.success else 'failed'}'><td>{html.escape(o.table)}</td>"
                f"<td>{html.escape(o.column or '*')}</td><td><code>{html.escape(o.expectation)}"
                f"</code></td><td>{html.escape(o.purpose)}</td><td>{html.escape(o.observed)}</td>"
                f"<td class='{'pass' if o.success else 'fail'}'>{'pass' if o.success else 'FAIL'}"
                "</td></tr>"
            )
        body.append("</table>")
    return page(title, "\n".join(body), _CSS)
