"""The command line's defaults that name a model or a source come from the configuration when a
command runs (cli/defaults.py): the first use case's model, a use case's first source. No
command's definition names one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hospital_mlops.cli.main import build_parser, run_captured
from hospital_mlops.governance.config import first_model_name, use_cases_by_model
from hospital_mlops.use_case import load_use_case, load_use_cases

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["monitor", "run"], f"{first_model_name()}@champion"),
        (["monitor", "report"], f"{first_model_name()}@champion"),
        (["serve"], f"{first_model_name()}@champion"),
        (["serve-one", "predictor"], f"{first_model_name()}@champion"),
        (["rollout", "status"], first_model_name()),
        (["serve", "--model", "post-acute-at-admission@3"], "post-acute-at-admission@3"),
    ],
)
def test_the_default_model_is_the_first_use_cases(argv: list[str], expected: str) -> None:
    assert build_parser().parse_args(argv).model == expected
    assert use_cases_by_model()[first_model_name()].id == load_use_case().id


def test_the_default_source_is_the_use_cases_first() -> None:
    for case in load_use_cases().values():
        args = build_parser().parse_args(["pipeline", "run", "--use-case", case.id])
        assert args.source == next(iter(case.sources)), case.id
    assert build_parser().parse_args(["pipeline", "run"]).source == next(
        iter(load_use_case().sources)
    )
    given = build_parser().parse_args(["pipeline", "run", "--source", "synthetic"])
    assert given.source == "synthetic"


def test_an_undeclared_use_case_is_one_clear_line() -> None:
    code, _, err = run_captured(["pipeline", "run", "--use-case", "nope", "--no-model"])
    assert code != 0 and "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()] and "no use case 'nope'" in err


def test_no_command_definition_names_a_model_or_a_source() -> None:
    names = {*use_cases_by_model(), "diabetes130", "synthetic"}
    names |= {c.served_as for c in load_use_cases().values()}
    alternatives = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"default=\"(?:{alternatives})[@\"]")
    found = [
        f"{path.relative_to(ROOT)}:{n}"
        for path in sorted((ROOT / "hospital_mlops" / "cli").glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found
