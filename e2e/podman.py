"""podman, run with the project's settings (containers/containers.conf), for the harness.

Nothing here is part of the product: the harness stands in for a cluster with podman.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTAINERS_CONF = ROOT / "containers" / "containers.conf"
NETWORK = "podman"  # podman's default bridge
GATEWAY = "10.88.0.1"  # the bridge's address on the host: the host's services as containers see it
SUBNET = "10.88.0.0/16"


class PodmanError(RuntimeError):
    """A podman command failed; the message is its command line and its stderr."""


def podman_env() -> dict[str, str]:
    conf = os.environ.get("CONTAINERS_CONF", str(CONTAINERS_CONF))
    return {**os.environ, "CONTAINERS_CONF": conf}


def podman(
    *args: str, timeout: float = 300, check: bool = True, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    if shutil.which("podman") is None:
        raise PodmanError("podman is not installed (containers/install-engine.sh installs it)")
    proc = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=podman_env(),
        input=stdin,
    )
    if check and proc.returncode != 0:
        raise PodmanError(
            f"podman {' '.join(args[:3])} … failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-1500:]}"
        )
    return proc


def logs(name: str, tail: int = 40) -> str:
    proc = podman("logs", "--tail", str(tail), name, check=False, timeout=60)
    return (proc.stdout + proc.stderr)[-4000:]


def state(name: str) -> tuple[str, int]:
    """The container's status (running, exited, …) and exit code; ("missing", -1) if none."""
    proc = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check=False)
    if proc.returncode != 0:
        return "missing", -1
    status, _, code = proc.stdout.strip().partition(" ")
    return status, int(code or 0)


def container_ip(name: str) -> str:
    proc = podman(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name
    )
    addresses = proc.stdout.split()
    if not addresses:
        raise PodmanError(f"{name} has no address on a podman network")
    return addresses[0]


def bring_up_bridge(image: str, name: str) -> None:
    """Start a sleeping container on the default bridge, so that its gateway address exists on
    the host before the host's servers (PostgreSQL, MLflow) bind to it."""
    podman("rm", "--force", "--ignore", name, check=False)
    podman(
        "run", "--detach", "--name", name, "--network", NETWORK, "--pull", "never",
        "--entrypoint", '["sleep"]', image, "infinity",
    )  # fmt: skip


class ImagesMissing(RuntimeError):
    """The images `make images` records are not in podman's store as recorded."""


def built_images(record_file: Path) -> tuple[dict[str, str], dict[str, object]]:
    """The pipeline and serving images `make images` built (out/images.json), each checked to
    be in podman's store with the recorded id: name → repository@sha256 (or the tag), and the
    record."""
    if not record_file.exists():
        raise ImagesMissing(f"no {record_file}: build the images first (make images)")
    record = json.loads(record_file.read_text())
    refs = {}
    for name in ("pipeline", "serving"):
        entry = record["images"][name]
        found = podman("image", "inspect", "--format", "{{.Id}}", entry["ref"], check=False)
        if found.returncode != 0 or found.stdout.strip() != entry["id"]:
            raise ImagesMissing(
                f"{entry['ref']} is not the image {record_file} records: rebuild it (make images)"
            )
        refs[name] = entry["digest_ref"] or entry["ref"]
    return refs, record
