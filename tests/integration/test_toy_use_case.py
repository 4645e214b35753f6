"""docs/adding-a-use-case.md, followed by a test: a toy third use case (a long stay, predicted at
admission, on the synthetic source) is declared in its own YAML document, its feature set lives
in its own module outside the package (tests/toy/toy_use_case.py, named by
HMLOPS_FEATURE_SET_MODULES), and then it trains, registers, serves and is monitored by the same
commands and servers as the shipped use cases. No generic module names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.conftest import TEST_KEY
from tests.integration.conftest import free_port_base

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "toy"
USE_CASE = "toy_long_stay"
MODEL = "toy-long-stay"
MODULE = "tests.toy.toy_use_case"


@pytest.fixture(scope="module")
def toy_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project as a site would have it after the tutorial's config step: config/ with the
    toy use case's document appended, everything else as shipped."""
    home = tmp_path_factory.mktemp("toy_home")
    for entry in ROOT.iterdir():
        if entry.name not in ("config", ".git"):
            (home / entry.name).symlink_to(entry)
    shutil.copytree(ROOT / "config", home / "config")
    declared = (home / "config" / "use_case.yaml").read_text()
    (home / "config" / "use_case.yaml").write_text(
        declared.rstrip("\n") + "\n" + (TOY / "toy_use_case.yaml").read_text()
    )
    return home


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ, HMLOPS_HOME=str(home), HMLOPS_FEATURE_SET_MODULES=MODULE)
    env["HMLOPS_HMAC_KEY"] = TEST_KEY
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


def _hmlops(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hospital_mlops.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=_env(home), timeout=1200)


@pytest.fixture(scope="module")
def toy_registered(toy_home: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("toy_store")
    proc = _hmlops(toy_home, "pipeline", "run", "--source", "synthetic", "--use-case", USE_CASE,
                   "--synthetic-encounters", "12000", "--out", str(out), "--json")  # fmt: skip
    summary = json.loads(proc.stdout)
    assert proc.returncode == 0, (summary.get("model_gates"), proc.stderr[-3000:])
    return summary, out


def test_no_generic_module_names_the_toy_use_case() -> None:
    for room in ("hospital_mlops", "serving", "components", "pipelines", "config"):
        for path in (ROOT / room).rglob("*"):
            if path.is_file() and path.suffix in (".py", ".yaml"):
                text = path.read_text(encoding="utf-8", errors="ignore")
                assert USE_CASE not in text and MODEL not in text, path


def test_it_trains_and_registers_under_its_own_name(toy_registered) -> None:
    summary, _ = toy_registered
    assert summary["model"]["name"] == MODEL and summary["model"]["version"] is not None
    assert summary["model_gates_passed"] is True


def test_it_serves_and_is_monitored_by_the_same_servers(
    toy_home, toy_registered, tmp_path, monkeypatch
) -> None:
    """The shipped predictor serves it on its features; the drift monitor windows its logged
    requests against its registered reference."""
    summary, _ = toy_registered
    version = int(summary["model"]["version"])
    published = next(a["path"] for a in summary["artifacts"] if a["name"] == "published_features")
    frame = pd.read_parquet(next(Path(published).rglob("features.parquet")))
    names = ["age_years", "sex_male", "site", "admitted_from", "service", "admissions_prior_year"]
    rows = frame[names].tail(40)
    instances = [
        {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]
    instances = [{k: v for k, v in i.items() if v is not None} for i in instances]

    port = free_port_base(1)
    log_file = tmp_path / "predictor.log"
    argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
            "--model", f"{MODEL}@{version}", "--port", str(port)]  # fmt: skip
    from serving.readiness import wait_until_ready

    with log_file.open("wb") as sink:
        process = subprocess.Popen(argv, env=_env(toy_home), stdout=sink, stderr=sink)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log_file, 180)
        url = f"http://127.0.0.1:{port}/v1/models/{MODEL}:predict"
        answers: list[dict] = []
        for start in range(0, len(instances), 20):
            response = httpx.post(
                url, json={"instances": instances[start : start + 20]}, timeout=30
            )
            assert response.status_code == 200, response.text
            answers += response.json()["predictions"]
        assert len(answers) == len(instances) and all(0 < a["risk"] < 1 for a in answers)
        assert all(a["model_version"] == f"{MODEL}/{version}" for a in answers)
        refused = httpx.post(url, json={"instances": [dict(instances[0], site="MOON")]})
        assert refused.status_code == 400 and "site" in refused.text
    finally:
        process.terminate()
        process.wait(timeout=30)
    # this process as the site's would be: the toy's config and its registered module
    monkeypatch.setenv("HMLOPS_HOME", str(toy_home))
    from hospital_mlops.features import USE_CASE_SETS

    # held by monkeypatch before the import, so the import's registration is undone afterwards
    monkeypatch.setitem(USE_CASE_SETS, ("synthetic", USE_CASE), None)
    from tests.toy import toy_use_case

    monkeypatch.setitem(USE_CASE_SETS, ("synthetic", USE_CASE), toy_use_case.build)
    _monitored(version, instances, answers)


def _monitored(version: int, instances: list[dict], answers: list[dict]) -> None:
    """The drift monitor, in this process, on the toy set's served inputs and the registered
    reference: the logged requests and responses fill windows that are tested."""
    from hospital_mlops.drift.inference_events import InferenceEvent
    from hospital_mlops.drift.monitor import DriftMonitor
    from hospital_mlops.drift.store import reference_from_registry
    from hospital_mlops.drift.tester import DriftTester
    from hospital_mlops.features import feature_set_named, served_inputs

    reference, model_version, baseline = reference_from_registry(MODEL, str(version))
    fs = feature_set_named(str(reference.info["feature_set"]))
    assert fs is not None and fs.name == "toy_long_stay_synthetic"
    tester = DriftTester(reference, fs, "scipy", 0.01, model_version, 20, baseline)
    monitor = DriftMonitor(tester, served_inputs(fs), 20, expected_model_version=model_version)
    results = []
    for i in range(0, 40, 10):
        ce_id = f"toy-{i}"
        when = "2026-12-06T10:00:00Z"
        results += monitor.observe(
            InferenceEvent(
                ce_id,
                "request",
                MODEL,
                "predictor",
                "ns",
                when,
                {"instances": instances[i : i + 10]},
            )
        )
        results += monitor.observe(
            InferenceEvent(
                ce_id,
                "response",
                MODEL,
                "predictor",
                "ns",
                when,
                {"predictions": answers[i : i + 10]},
            )
        )
    assert len(results) == 2 and all(r.window_size == 20 for r in results)
    assert not monitor.rejected, monitor.rejected
