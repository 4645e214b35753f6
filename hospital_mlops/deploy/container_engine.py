"""A Docker API for local container runs, and the settings a pipeline step's container gets.

kfp.local's DockerRunner speaks the Docker API through the ``docker`` SDK. Docker answers it where
it runs; elsewhere podman serves the same API (``podman system service``), started here for the
length of one run when nothing else answers. The steps then run in the pipeline image with the
posture they have on a cluster: a read-only root with ``/tmp`` writable, no capabilities, no
privilege escalation, no network unless the registry is a server, and only the store, the extract
and the registry mounted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hospital_mlops.paths import project_root

DOCKER_HOST = "DOCKER_HOST"
CONTAINERS_CONF = "CONTAINERS_CONF"
# Variables a step reads from its environment; everything else stays on the host. The image's
# own code version (HMLOPS_GIT_SHA, HMLOPS_GIT_DIRTY) and HMLOPS_HOME are never overridden.
PASSED_ENV = (
    "HMLOPS_HMAC_KEY",
    "HMLOPS_HMAC_PREVIOUS_KEY",
    "HMLOPS_LICENCE_PROFILE",
    "HMLOPS_COMPILED_TREESHAP",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
)
# Variables that name a file: the file is mounted read-only at the same path.
PASSED_FILE_ENV = ("HMLOPS_HMAC_KEY_FILE", "HMLOPS_HMAC_PREVIOUS_KEY_FILE")
SERVICE_START_TIMEOUT_S = 30.0


class ContainerEngineError(RuntimeError):
    """No container engine answers, or the image is not there; the message says what to do."""


def project_containers_conf() -> Path | None:
    """podman's settings for these machines (runtime, rlimits), when the project is checked out."""
    path = project_root() / "containers" / "containers.conf"
    return path if path.is_file() else None


def _ping(base_url: str | None) -> str | None:
    """The engine's name if a Docker API answers at ``base_url`` (None: the SDK's default)."""
    import docker

    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
    except docker.errors.DockerException:
        return None
    try:
        client.ping()
        components = client.version().get("Components") or [{}]
        return str(components[0].get("Name") or "Docker Engine")
    except Exception:  # any failure means "not this one"
        return None
    finally:
        client.close()


@contextlib.contextmanager
def docker_api(log_dir: Path) -> Iterator[str]:
    """Yield a description of the engine serving the Docker API, with ``DOCKER_HOST`` set.

    ``DOCKER_HOST`` wins when set (it must answer); then a running Docker; then podman's API
    service, started on a private socket and stopped afterwards (its log in ``log_dir``).
    """
    configured = os.environ.get(DOCKER_HOST)
    if configured:
        engine = _ping(configured)
        if engine is None:
            raise ContainerEngineError(f"DOCKER_HOST={configured} does not answer the Docker API")
        yield f"{engine} at {configured}"
        return
    if Path("/var/run/docker.sock").exists():
        engine = _ping(None)
        if engine is not None:
            yield f"{engine} at /var/run/docker.sock"
            return
    podman = shutil.which("podman")
    if podman is None:
        raise ContainerEngineError(
            "no container engine: set DOCKER_HOST to a Docker API, start Docker, or install "
            "podman (docs/deployment.md#images)"
        )
    env = dict(os.environ)
    conf = project_containers_conf()
    if conf is not None and CONTAINERS_CONF not in env:
        env[CONTAINERS_CONF] = str(conf)
    log_dir.mkdir(parents=True, exist_ok=True)
    socket_dir = Path(tempfile.mkdtemp(prefix="hmlops-podman-"))
    url = f"unix://{socket_dir / 'podman.sock'}"
    log_path = log_dir / "podman-service.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [podman, "system", "service", "--time=0", url],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
        engine = None
        while engine is None:
            if proc.poll() is not None:
                raise ContainerEngineError(
                    f"podman system service exited with {proc.returncode}; see {log_path}"
                )
            if time.monotonic() > deadline:
                raise ContainerEngineError(
                    f"podman system service did not answer in {SERVICE_START_TIMEOUT_S:.0f} s; "
                    f"see {log_path}"
                )
            time.sleep(0.2)
            engine = _ping(url)
        os.environ[DOCKER_HOST] = url
        yield f"podman ({engine}) at {url}"
    finally:
        os.environ.pop(DOCKER_HOST, None)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(socket_dir, ignore_errors=True)


def resolve_image(ref: str) -> str:
    """The local image ``ref`` names, as ``repository@sha256:…``: what runs is pinned, and the
    run summary says exactly which image it was. Never pulls."""
    import docker

    client = docker.from_env()
    try:
        image = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise ContainerEngineError(
            f"image {ref} is not in the local image store; build it with `make images` "
            "(or load it) first"
        ) from None
    except docker.errors.APIError as exc:
        raise ContainerEngineError(
            f"the container engine refused to look up {ref}: {exc}"
        ) from None
    finally:
        client.close()
    digests = [str(d) for d in image.attrs.get("RepoDigests") or []]
    if "@sha256:" in ref and ref in digests:
        return ref
    repository = ref.split("@", 1)[0].rsplit(":", 1)[0] if "/" in ref else ref.split(":", 1)[0]
    for digest in digests:
        if digest.split("@", 1)[0].endswith(repository):
            return digest
    if digests:
        return digests[0]
    raise ContainerEngineError(f"image {ref} has no digest in the local store; rebuild it")


@dataclass(frozen=True)
class StepContainer:
    """What every step's container gets: mounts at the host's own paths (so every path a step is
    given means the same inside), the environment it reads, and the cluster's posture."""

    writable: tuple[Path, ...]
    read_only: tuple[Path, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
    network: bool = False

    def docker_run_args(self) -> dict[str, Any]:
        from docker.types import Mount

        mounts = [Mount(str(p), str(p), type="bind", read_only=False) for p in self.writable]
        mounts += [Mount(str(p), str(p), type="bind", read_only=True) for p in self.read_only]
        return {
            "mounts": mounts,
            "environment": dict(self.environment),
            # Locally the steps run as you, so what they write into your store is yours (as
            # `docker run --user $(id -u):$(id -g)`); on a cluster they run as the image's uid
            # 10001 and the store's PVC is theirs through fsGroup.
            "user": f"{os.getuid()}:{os.getgid()}",
            "read_only": True,
            "tmpfs": {"/tmp": "rw,size=2g"},
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "network_mode": "host" if self.network else "none",
        }


def step_container(
    *,
    store_root: Path,
    extract: Path,
    catalog: Path | None,
    registry_dir: Path | None,
    env: Mapping[str, str] | None = None,
) -> StepContainer:
    """The container settings for one run: the store (and the registry's directory, when the
    model steps run) writable; the extract and a catalog given on the command line read-only."""
    source = dict(os.environ if env is None else env)
    environment = {name: source[name] for name in PASSED_ENV if source.get(name)}
    read_only = [extract.resolve()]
    if catalog is not None:
        read_only.append(catalog.resolve())
    for name in PASSED_FILE_ENV:
        if source.get(name):
            path = Path(source[name]).resolve()
            environment[name] = str(path)
            read_only.append(path)
    writable = [store_root.resolve()]
    network = False
    if registry_dir is not None:
        tracking = environment.get("MLFLOW_TRACKING_URI", "")
        scheme = urlparse(tracking).scheme
        if scheme in {"http", "https", "postgresql", "postgresql+psycopg", "mysql"}:
            network = True  # a registry server (or its database) on the host's network
        else:  # the local registry: a SQLite file, its artifacts in the state directory
            writable.append(registry_dir.resolve())
            environment["HMLOPS_STATE_DIR"] = str(registry_dir.resolve())
            if scheme == "sqlite":
                database = Path(tracking.split("sqlite:///", 1)[-1])  # sqlite:////abs/path
                writable.append(database.resolve().parent)
    writable = [p for p in dict.fromkeys(writable) if not _inside_any(p, writable)]
    read_only = [p for p in dict.fromkeys(read_only) if not _inside_any(p, writable)]
    return StepContainer(tuple(writable), tuple(read_only), environment, network)


def _inside_any(path: Path, roots: list[Path]) -> bool:
    return any(path != root and path.is_relative_to(root) for root in roots)
