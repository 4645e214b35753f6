"""The docs' tables of figures are generated from the saved results, and stay so.

benchmarks/doc_tables.py writes every table of figures in docs/ from benchmarks/results/*.json
between marker comments. These tests hold each table to what its results file gives, show that
a changed table or a changed result is caught (on a copy; the real files are never edited), and
hold each marker pair to a generator and each generator to a doc. The results files and the docs
must also carry no raw diabetes130 identifier (the PHI rule).
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
EXTRACT = ROOT / "data" / "diabetes130" / "dataset_diabetes.zip"


def _module(name: str) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


doc_tables = _module("doc_tables")
bench_common = _module("bench_common")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of docs/ and benchmarks/results/ to alter."""
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copytree(RESULTS, tmp_path / "benchmarks" / "results")
    return tmp_path


def _check(root: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = doc_tables.main(["--check", "--root", str(root)])
    return code, capsys.readouterr().err.splitlines()


def _markers() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        for line in doc.read_text().splitlines():
            m = doc_tables.MARKER.match(line.strip())
            if m and m.group(2) == "begin":
                found.setdefault(m.group(1), []).append(str(doc.relative_to(ROOT)))
    return found


# --- the tables ---------------------------------------------------------------------------------


def test_every_table_matches_its_results_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, problems = _check(ROOT, capsys)
    assert (code, problems) == (0, []), "\n".join(problems)


def test_every_marker_pair_has_a_generator_and_every_generator_a_marker() -> None:
    markers = _markers()
    assert set(markers) - set(doc_tables.GENERATORS) == set(), "markers without a generator"
    assert set(doc_tables.GENERATORS) - set(markers) == set(), "generators no doc uses"
    assert len(doc_tables.GENERATORS) >= 20


def test_each_table_names_its_results_file_and_the_command_that_wrote_it() -> None:
    results = doc_tables.Results(RESULTS)
    for name, generate in doc_tables.GENERATORS.items():
        last = generate(results).render()[-1]
        named = re.search(
            r"`benchmarks/results/\w+\.json` \(written by `[^`]*benchmarks/\w+\.py", last
        )
        assert named, (name, last)


def test_an_altered_table_is_caught_and_check_changes_nothing(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tree / "docs" / "reliability.md"
    text = doc.read_text()
    p99 = json.loads((RESULTS / "load.json").read_text())["p99_ms"]
    row = next(line for line in text.splitlines() if line.startswith("| latency from the schedule"))
    assert str(p99) in row
    altered = text.replace(row, row.replace(str(p99), f"{p99 - 1:.2f}"))
    doc.write_text(altered)

    code, problems = _check(tree, capsys)

    assert code == 1
    assert len(problems) == 1, problems
    assert problems[0].startswith("docs/reliability.md:") and "table:load is stale" in problems[0]
    assert doc.read_text() == altered  # --check writes nothing


def test_an_altered_result_is_caught_in_every_doc_that_quotes_it_and_regenerated(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tree / "benchmarks" / "results" / "load.json"
    load = json.loads(path.read_text())
    load["p99_ms"] = 9.87
    path.write_text(json.dumps(load))

    code, problems = _check(tree, capsys)
    assert code == 1
    stale = sorted(line.split(":")[0] for line in problems)
    assert stale == ["docs/performance.md", "docs/reliability.md"], problems
    assert all("table:load is stale" in line for line in problems)

    assert doc_tables.main(["--root", str(tree)]) == 0  # regenerate
    capsys.readouterr()
    assert _check(tree, capsys) == (0, [])
    assert "/ 9.87 /" in (tree / "docs" / "reliability.md").read_text()


def test_a_marker_without_a_generator_and_a_broken_pair_are_named(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tree / "docs" / "fallback.md"
    doc.write_text(
        doc.read_text()
        + "\n<!-- table:no-such-table begin -->\n<!-- table:no-such-table end -->\n"
        + "\n<!-- table:load begin -->\n"
    )
    code, problems = _check(tree, capsys)
    assert code == 1
    assert any("table:no-such-table has no generator" in line for line in problems), problems
    assert any("table:load begins and never ends" in line for line in problems), problems


def test_a_results_file_without_what_a_table_needs_is_named(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tree / "benchmarks" / "results" / "cds.json"
    cds = json.loads(path.read_text())
    del cds["card"]
    path.write_text(json.dumps(cds))
    code, problems = _check(tree, capsys)
    assert code == 1
    assert any("table:cds-latency cannot be generated" in line for line in problems), problems


# --- --append -----------------------------------------------------------------------------------


def test_append_keeps_the_earlier_runs_and_the_latest_at_the_top(tmp_path: Path) -> None:
    path = tmp_path / "serving.json"
    first: dict[str, Any] = {"measured_at": "t1", "p99_ms": 3.0}
    path.write_text(json.dumps(first))  # a file written before runs existed: one run

    second = bench_common.with_runs({"measured_at": "t2", "p99_ms": 4.0}, path, append=True)
    assert second["p99_ms"] == 4.0 and second["measured_at"] == "t2"
    assert second["runs"] == [first, {"measured_at": "t2", "p99_ms": 4.0}]
    path.write_text(json.dumps(second))

    third = bench_common.with_runs({"measured_at": "t3", "p99_ms": 5.0}, path, append=True)
    assert [r["measured_at"] for r in third["runs"]] == ["t1", "t2", "t3"]
    assert all("runs" not in r for r in third["runs"])

    alone = bench_common.with_runs({"measured_at": "t4"}, path, append=False)
    assert alone["runs"] == [{"measured_at": "t4"}]


def test_the_files_with_runs_keep_the_latest_run_at_the_top() -> None:
    for name in ("serving", "pipeline", "predictor_stages"):
        data = json.loads((RESULTS / f"{name}.json").read_text())
        latest = {k: v for k, v in data["runs"][-1].items() if k != "saved_in_commit"}
        assert {k: v for k, v in data.items() if k != "runs"} == latest, name


# --- no raw identifier (PHI) --------------------------------------------------------------------

# a count or a figure in a doc, or a number in a results file, with thousands separators or not
_NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?![\w]|\.\d)")
_IDENTIFIER_KEY = re.compile(r"(^|_)(encounter_id|encounter_nbr|patient_nbr|patient_id)$")
# Five digits and up: the extract's encounter IDs start there, and shorter numbers (counts,
# percentages, ports) would meet the few short patient numbers by chance.
_SMALLEST = 10_000


@pytest.fixture(scope="module")
def raw_identifiers() -> set[int]:
    with zipfile.ZipFile(EXTRACT) as archive:
        name = next(n for n in archive.namelist() if n.endswith("diabetic_data.csv"))
        with archive.open(name) as handle:
            frame = pd.read_csv(handle, usecols=["encounter_id", "patient_nbr"])
    ids = set(frame["encounter_id"].astype(int)) | set(frame["patient_nbr"].astype(int))
    assert len(ids) > 170_000  # the extract was read
    return ids


def _numbers(text: str) -> Iterator[int]:
    for m in _NUMBER.finditer(text):
        yield int(m.group(1).replace(",", ""))


def _json_hits(value: Any, ids: set[int], where: str) -> Iterator[str]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if _IDENTIFIER_KEY.search(str(key)):
                yield f"{where}.{key}: a raw identifier field"
            yield from _json_hits(inner, ids, f"{where}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            yield from _json_hits(inner, ids, f"{where}[{i}]")
    elif isinstance(value, bool):
        return
    elif isinstance(value, int | float) and float(value).is_integer():
        if abs(value) >= _SMALLEST and int(value) in ids:
            yield f"{where}: {int(value)}"
    elif isinstance(value, str):
        for n in _numbers(value):
            if n >= _SMALLEST and n in ids:
                yield f"{where}: {n} in {value[:60]!r}"


def test_no_raw_diabetes130_identifier_in_the_saved_results(raw_identifiers: set[int]) -> None:
    hits = []
    for path in sorted(RESULTS.glob("*.json")):
        hits += list(_json_hits(json.loads(path.read_text()), raw_identifiers, path.name))
    assert hits == []


def test_no_raw_diabetes130_identifier_in_the_docs(raw_identifiers: set[int]) -> None:
    hits = []
    for doc in sorted((ROOT / "docs").rglob("*.md")):
        for number, line in (
            (n, i + 1)
            for i, text in enumerate(doc.read_text().splitlines())
            for n in _numbers(text)
        ):
            if number >= _SMALLEST and number in raw_identifiers:
                hits.append(f"{doc.relative_to(ROOT)}:{line}: {number}")
    assert hits == []


def test_the_identifier_scan_finds_an_identifier_where_one_is(raw_identifiers: set[int]) -> None:
    """The scans above would see a leak: a raw encounter ID as a results file and a doc hold it."""
    known = min(n for n in raw_identifiers if n >= _SMALLEST)
    leaked = {"parts": [{"first_row": 0, "first_encounter_id": known}]}
    assert len(list(_json_hits(leaked, raw_identifiers, "x"))) == 2  # the key, and the value
    assert known in set(_numbers(f"the first encounter, {known:,}, in the extract"))
