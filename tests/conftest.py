"""Shared fixtures: a test HMAC key, the catalog, and small real/synthetic extracts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hospital_mlops.data.catalog import Catalog, load_catalog
from hospital_mlops.data.sources.extract import default_extract, read_extract, write_csv_extract
from hospital_mlops.data.sources.synthetic.parquet_extract import generate_extract

# The compiled TreeSHAP pass is compiled once per test run, not in every process that loads a
# model (servers included: they inherit it). Served images compile at load instead.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".numba-cache"))

pytest_plugins = ["tests.stores"]

TEST_KEY = "test-only-hmac-key-0123456789abcdef0123456789"
D130_SUBSET_STEP = 7
SYNTHETIC_SMALL = 4_000


# Tests that share the session's real diabetes130 pipeline run must run in one xdist worker, or
# each worker would run the pipeline again; every other module runs whole on one worker.
# (pytest-xdist 3.8's xdist_group mark does not take effect under pytest 9, so the scheduler
# groups them by file.)
SHARED_RUN_FILES = (
    "tests/integration/test_pipeline_kfp.py",
    "tests/integration/test_serving_stack.py",
    "tests/integration/test_monitoring_cli.py",
    "tests/integration/test_rollout_cli.py",
    "tests/integration/test_fallback_faults.py",
    "tests/integration/test_governance_packet.py",
    "tests/integration/test_access_control.py",
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedRunScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            # The rest by module: a module's fixtures (trained models, started servers) are
            # then built on one worker, not on both.
            if nodeid.startswith(SHARED_RUN_FILES):
                return "diabetes130-run"
            return nodeid.split("::", 1)[0]

    return SharedRunScheduling(config, log)


@pytest.fixture(scope="session", autouse=True)
def registry_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The MLflow registry of the test session: a SQLite store in a temporary directory (every
    subprocess inherits it), never the developer's own `.hmlops/`."""
    state = tmp_path_factory.mktemp("hmlops-state")
    os.environ["HMLOPS_STATE_DIR"] = str(state)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    return state


@pytest.fixture(autouse=True)
def hmac_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HMLOPS_HMAC_KEY", TEST_KEY)
    return TEST_KEY


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()


@pytest.fixture(scope="session")
def d130_full(catalog: Catalog) -> Path:
    return default_extract("diabetes130", catalog.source("diabetes130"))


@pytest.fixture(scope="session")
def d130_small(catalog: Catalog, d130_full: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every 7th real encounter (~14,500, across all eras), in the source's own CSV layout.

    Not the first rows: the earliest era has no payer codes at all, which the gate rightly
    flags as a missingness failure."""
    spec = catalog.source("diabetes130")
    tables = read_extract(d130_full, spec)
    subset = {"encounters": tables["encounters"].iloc[::D130_SUBSET_STEP]}
    return write_csv_extract(subset, spec, tmp_path_factory.mktemp("d130_small"))


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_extract(tmp_path_factory.mktemp("synthetic"), SYNTHETIC_SMALL, seed=11)
