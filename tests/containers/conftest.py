"""The container suite's fixtures: the engine (podman here; Docker where it runs) and the images
`make images` built, named in out/images.json.

Outside CI a machine without podman skips this suite with the reason; under CI (``CI`` set) a
missing engine or image is a failure, never a skip: a suite that did not run is not a pass.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import d130_champion, d130_runs, d130_signed_off  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
IMAGES_JSON = Path(os.environ.get("HMLOPS_IMAGES_JSON", ROOT / "out" / "images.json"))
os.environ.setdefault("CONTAINERS_CONF", str(ROOT / "containers" / "containers.conf"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(pytest.mark.containers)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"container suite under CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Images:
    pipeline: str  # repository@sha256:… as built
    serving: str
    record: dict


def podman(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def engine() -> str:
    if shutil.which("podman") is None:
        _unavailable("podman is not installed (make test-containers installs it)")
    proc = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout=60)
    if proc.returncode != 0:
        _unavailable(f"podman does not run: {proc.stderr.strip()[-300:]}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def images(engine: str) -> Images:
    from e2e.podman import ImagesMissing, built_images

    try:
        refs, record = built_images(IMAGES_JSON)
    except ImagesMissing as exc:
        _unavailable(str(exc))
    return Images(refs["pipeline"], refs["serving"], record)


@pytest.fixture
def container_name(request: pytest.FixtureRequest) -> Iterator[str]:
    """A unique container name, removed after the test whatever happened."""
    name = f"hmlops-test-{os.getpid()}-{request.node.name[:40]}".replace("[", "-").replace("]", "")
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in name)
    yield name
    podman("rm", "--force", "--ignore", name, check=False)
