"""The small-cell rule in published reports: counts of 1 to 10 are hidden with the rates
computed on them, a lone hidden count gets a complement, and the report says so."""

from __future__ import annotations

import re

import pytest

from hospital_mlops.render.small_cells import count_html, suppressed, suppressed_rows
from tests.unit.test_evaluation import _evaluate, _predictions
from tests.unit.test_evidence import _context as evidence_context


def test_small_counts_are_hidden_and_a_lone_one_gets_a_complement() -> None:
    assert suppressed([500, 7, 40, 0]) == ["", "small", "complement", ""]
    assert suppressed([500, 7, 3, 40]) == ["", "small", "small", ""]  # two hide each other
    assert suppressed([500, 40]) == ["", ""]
    assert suppressed([7]) == ["small"]  # nothing to complement it with
    assert count_html(10) == "&lt;11" and count_html(11) == "11" and count_html(0) == "0"
    assert count_html(5000, hidden=True) == "&lt;11" and count_html(None) == "—"


def test_rows_are_suppressed_within_their_own_partition() -> None:
    rows = [
        {"subgroup": "race", "rows": 900, "events": 90},
        {"subgroup": "race", "rows": 300, "events": 30},
        {"subgroup": "race", "rows": 60, "events": 4},  # few events: hidden with its rates
        {"subgroup": "sex", "rows": 700, "events": 70},
        {"subgroup": "sex", "rows": 560, "events": 54},
    ]
    assert suppressed_rows(rows, "subgroup", "rows", "events") == [
        "", "complement", "small", "", "",
    ]  # fmt: skip


@pytest.fixture(scope="module")
def report_with_a_tiny_group() -> str:
    from hospital_mlops.governance.validation_report import validation_html
    from hospital_mlops.use_case import load_use_case

    uc = load_use_case()
    uc = uc.model_copy(
        update={"evaluation": uc.evaluation.model_copy(update={"bootstrap_replicates": 30})}
    )
    predictions = _predictions(n=6000)
    predictions.loc[predictions.index[:7], "race"] = "C"  # a group of seven encounters
    evaluation = _evaluate(uc, predictions)
    context = {
        "source": "diabetes130",
        "run_id": "run-test",
        "use_case": uc,
        "training": evidence_context(evaluation).training,
        "code_version": {"git_sha": "abc", "dirty": False},
    }
    return validation_html(evaluation, {"passed": True, "gates": []}, context)


def _subgroup_rows(page: str, subgroup: str) -> dict[str, list[str]]:
    table = page.split("<h2>Subgroups")[1].split("</table>")[0]
    rows = {}
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, flags=re.S):
        cells = re.findall(r"<td>(.*?)</td>", row, flags=re.S)
        if cells and cells[0] == subgroup:
            rows[cells[1].replace(" (reference)", "")] = cells
    return rows


def test_the_validation_report_hides_the_tiny_group_and_says_so(report_with_a_tiny_group):
    page = report_with_a_tiny_group
    race = _subgroup_rows(page, "race")
    assert set(race) == {"A", "B", "C"}
    tiny = race["C"]
    assert tiny[2] == "&lt;11" and tiny[3] == "&lt;11"
    assert tiny[4:9] == ["suppressed"] * 5  # no AUROC, sensitivity, PPV, O/E or ratios
    # its complement: B's counts hidden (else C = total − A − B), B's rates kept
    assert race["B"][2] == "&lt;11" and race["B"][4] != "suppressed"
    assert race["A"][2] != "&lt;11" and int(race["A"][2].replace(",", "")) > 3000
    assert "small-cell rule" in page
    # sex has no small group: nothing hidden there
    assert all(r[2] != "&lt;11" for r in _subgroup_rows(page, "sex").values())
