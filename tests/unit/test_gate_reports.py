"""Gate reports open with a summary of every gate, then each gate's failures in full, its
passing checks folded away (issue 23: a reader looking for the one that failed finds it)."""

from __future__ import annotations

import re

from hospital_mlops.validation.checks import CheckOutcome, GateResult
from hospital_mlops.validation.reports import gate_html, render_page


def _outcome(n: int, success: bool) -> CheckOutcome:
    return CheckOutcome(
        table="encounters",
        column=f"column_{n}",
        expectation="expect_column_values_to_not_be_null",
        purpose="a missing value breaks the join",
        success=success,
        observed="0 null" if success else "12 null",
    )


def _gate(name: str, failing: int, passing: int) -> GateResult:
    outcomes = [_outcome(n, False) for n in range(failing)]
    outcomes += [_outcome(100 + n, True) for n in range(passing)]
    return GateResult(
        source="diabetes130",
        layer="bronze",
        name=name,
        success=failing == 0,
        suite_version="s1",
        checks_run=failing + passing,
        outcomes=outcomes,
    )


def test_the_failures_come_first_and_the_passing_checks_are_folded() -> None:
    page = gate_html(_gate("bronze_gate", failing=1, passing=97))
    marks = ("<h2>Summary</h2>", "Failed checks (1)", "<summary>Passing checks (97)</summary>")
    summary, failed, folded = (page.index(mark) for mark in marks)
    assert summary < failed < folded
    assert "<span class='fail'>1 failed</span>" in page
    before_fold = page[:folded]
    assert before_fold.count("<td><span class='fail'>FAIL</span></td>") == 1
    # every pass is inside the fold
    assert before_fold.count("<td><span class='pass'>pass</span></td>") == 0
    assert page[folded:].count("<td><span class='pass'>pass</span></td>") == 97


def test_a_page_of_several_gates_summarises_them_all_failing_ones_first() -> None:
    page = render_page("Gates", [_gate("silver_gate", 0, 3), _gate("bronze_gate", 2, 5)])
    rows = re.findall(r"<tr(?: class=\"failed\")?><td>bronze · (\w+)</td>", page)
    assert rows[:2] == ["bronze_gate", "silver_gate"]
    assert "2 gates, 10 checks: <span class='fail'>2 failed</span>" in page
    assert page.index("bronze_gate <span class='fail'>") < page.index("silver_gate <span")
    clean = render_page("Gates", [_gate("silver_gate", 0, 3)])
    assert "<span class='pass'>all passed</span>" in clean and "Failed checks" not in clean
