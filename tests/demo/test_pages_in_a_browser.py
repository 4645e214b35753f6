"""Every HTML page the system writes, opened in a real browser as a reader would (issue 23):
Debian's headless Chromium with the network off, driven by selenium from the tools venv
(tests/demo/page_check.py). The pages are the ones `make demo` writes on a fresh machine (the
suite's one demo run: gate reports, validation report, model card, monitoring report,
worklist, the governance packet's index and review) and the card's explanation page, from the
same demo's log.

Zero requests leave any page and its console has no error; it has a language, headings in
order, named plots and tables with headers; at 1280 px it does not scroll sideways. A
full-page screenshot of each is kept under out/browser/ for a reviewer. The checker itself is
shown to catch each fault on a page made to have them all.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.demo.conftest import Demo

ROOT = Path(__file__).resolve().parents[2]
TOOLS_PYTHON = ROOT / ".venv-tools" / "bin" / "python"
CHECKER = Path(__file__).with_name("page_check.py")
SHOTS = ROOT / "out" / "browser"
CHECKS = ("loads", "lang", "headings", "img_alt", "svg_name", "table_headers", "overflow_x",
          "external_requests", "console_severe")  # fmt: skip
KINDS = {  # every kind of page, and how its file is named
    "gate report": lambda p: p.parent.name == "gates",
    "validation report": lambda p: p.name == "validation_report.html",
    "model card": lambda p: p.name == "model_card.html",
    "monitoring report": lambda p: p.name == "monitoring_report.html",
    "worklist": lambda p: p.name == "worklist.html",
    "governance packet index": lambda p: p.name == "index.html" and "packet" in str(p),
    "privacy and security review": lambda p: p.name == "privacy_security_review.html",
    "explanation": lambda p: p.name.startswith("explanation"),
}

EXPLAIN = """
import sys
from pathlib import Path

import sqlalchemy as sa

from hospital_mlops.ehr.cds_config import load_cds_config
from hospital_mlops.ehr.cds_explanation import explanation_page
from hospital_mlops.features import feature_set_for, served_inputs
from hospital_mlops.governance import registry
from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.model.scoring import score

out = Path(sys.argv[1])
log = PredictionLog()
with log.engine.connect() as conn:
    first = conn.execute(
        sa.select(predictions.c.prediction_id)
        .where(predictions.c.model_name == "readmission-30d")
        .limit(1)
    ).scalar_one()
record = log.get(first)
loaded = registry.load_risk_model("readmission-30d", "champion")
fs = feature_set_for("diabetes130")
threshold = float(loaded.training["thresholds"]["discharge_planning"])
(again,) = score([record["inputs"]], served_inputs(fs), loaded.model, threshold,
                 f"readmission-30d/{loaded.version}", contributions=True)
config = load_cds_config()
label = config.card_settings(config.services[0]).text.risk_label
(out / "explanation.html").write_text(explanation_page(record, again, label))
(out / "explanation_without_rescore.html").write_text(explanation_page(record, None, label))
"""


def _require_tools() -> None:
    missing = [p for p in ("/usr/bin/chromedriver", "/usr/lib/chromium/chromium", TOOLS_PYTHON)
               if not Path(p).exists()]  # fmt: skip
    if missing:  # make test-demo installs them; a run without them is a failure
        pytest.fail(f"not installed: {missing} (run `make test-demo`)", pytrace=False)


@pytest.fixture(scope="module")
def pages(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The demo's pages, its packets unzipped, and the explanations from its log (outside the
    demo's home, which the guarded tests scan as the demo left it)."""
    home, _, _, env = demo
    out = home / "out"
    pages = tmp_path_factory.mktemp("pages")
    for n, packet in enumerate(sorted(out.glob("governance-*.zip"))):
        with zipfile.ZipFile(packet) as z:
            z.extractall(pages / f"packet-{n}")
    extra = pages / "explanations"
    extra.mkdir()
    made = subprocess.run([sys.executable, "-c", EXPLAIN, str(extra)], cwd=home, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    return sorted([*out.rglob("*.html"), *pages.rglob("*.html")])


@pytest.fixture(scope="module")
def checked(pages: list[Path]) -> dict[str, Any]:
    _require_tools()
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    SHOTS.mkdir(parents=True)
    # each page gets a screenshot named for where it came from (several are index.html)
    named = SHOTS / "pages"
    named.mkdir()
    copies = []
    for n, page in enumerate(pages):
        copy = named / f"{n:02d}-{page.parent.name}-{page.name}"
        shutil.copyfile(page, copy)
        copies.append(copy)
    proc = subprocess.run(
        [str(TOOLS_PYTHON), str(CHECKER), "--shots", str(SHOTS), "--out",
         str(SHOTS / "results.json"), *map(str, copies)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    result = dict(json.loads(proc.stdout))
    result["sources"] = {str(c): str(p) for c, p in zip(copies, pages, strict=True)}
    return result


def _failures(checked: dict[str, Any], checks: tuple[str, ...]) -> list[str]:
    out = []
    for page in checked["pages"]:
        for name in checks:
            if not page.get(name, {}).get("ok", False):
                detail = {k: v for k, v in page.get(name, {}).items() if k != "ok"}
                out.append(f"{Path(page['file']).name}: {name} {json.dumps(detail)[:600]}")
    return out


def test_every_kind_of_page_was_opened(pages, checked) -> None:
    found = {kind: [p for p in pages if match(p)] for kind, match in KINDS.items()}
    assert all(found.values()), {k: v for k, v in found.items() if not v}
    assert len(checked["pages"]) == len(pages) >= len(KINDS)
    assert checked["browser"]["version"]  # a real Chromium answered


def test_no_page_sends_a_request_or_logs_an_error_with_the_network_off(checked) -> None:
    assert _failures(checked, ("loads", "external_requests", "console_severe")) == []


def test_every_page_has_the_accessibility_basics(checked) -> None:
    assert _failures(checked, ("lang", "headings", "img_alt", "svg_name", "table_headers")) == []


def test_no_page_scrolls_sideways_at_1280_px(checked) -> None:
    assert _failures(checked, ("overflow_x",)) == []
    for page in checked["pages"]:
        assert page["overflow_x"]["inner_width"] == 1280


def test_a_screenshot_of_each_page_is_kept_for_a_reviewer(checked) -> None:
    for page in checked["pages"]:
        shot = Path(page["screenshot"])
        assert shot.parent == SHOTS and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


BAD_PAGE = """<!DOCTYPE html><html><head><title>bad</title>
<link rel="stylesheet" href="https://cdn.example.com/a.css">
<script src="https://cdn.example.com/a.js"></script></head>
<body><h2>no h1 first</h2><h4>skips a level</h4>
<img src="https://example.com/x.png">
<svg width="10" height="10"><rect width="10" height="10"/></svg>
<table id="wide" style="width:3000px"><tr><td>no header cell</td></tr></table>
<script>console.error("boom")</script></body></html>
"""


def test_the_checker_catches_every_fault_it_looks_for(tmp_path) -> None:
    """A page made to break every check fails each: a pass above is not a checker that
    cannot fail."""
    _require_tools()
    bad = tmp_path / "bad.html"
    bad.write_text(BAD_PAGE)
    proc = subprocess.run([str(TOOLS_PYTHON), str(CHECKER), str(bad)], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    (page,) = json.loads(proc.stdout)["pages"]
    assert set(page["failed_checks"]) == set(CHECKS) - {"loads"}
    assert page["external_requests"]["count"] >= 3  # the stylesheet, the script, the image
    assert any("boom" in m["message"] for m in page["console_severe"]["messages"])
    assert page["overflow_x"]["overflow_px"] > 1000
