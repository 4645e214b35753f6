"""A rendered overlay's workloads, run in podman as declared, and waited for through their
readiness probes.

* **Deployments** (the CDS service, the drift detector) go through ``podman kube play``: the
  Deployment documents of the rendered overlay, with the test ConfigMaps beside them. podman
  4.3.1's own limits are worked around, never papered over (docs/deployment.md lists them):
  a ``Secret`` document is stored as YAML but read as JSON, so each Secret is made with
  ``podman secret create`` as the flat JSON map {key: base64 value} that kube play reads; the
  image is the local build's digest with ``imagePullPolicy: Never`` (there is no registry).
* **InferenceService components** (predictor, explainer) run as the pod KServe would make from
  their container spec: ``hospital_mlops.deploy.manifest_podman_run`` translates it into
  ``podman run``
  (KServe's appended explainer arguments included) and refuses what it cannot honour.
* **Service names.** The cluster's DNS name of the predictor
  (``readmission-predictor.hospital-mlops``, port 80, as Knative serves it) is the bridge
  gateway, where the predictor container is also published on port 80: ``--add-host`` for the
  translated pods, ``hostAliases`` in the played pods. That is the one thing added to a pod.

Every workload is checked before anything starts: each container is translated with the test
values, so a ``secretKeyRef`` to a key the Secret does not have, or a ``volumeMount`` with no
volume, fails the run naming the field. A readiness probe on a path the server does not serve
(404, ``failureThreshold`` times) fails it naming the probe, as does a container that exits or a
probe that never answers 200 in time. Nothing here is part of the product.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.podman import GATEWAY, NETWORK, container_ip, logs, podman, state
from hospital_mlops.deploy.manifest_container_spec import HttpProbe
from hospital_mlops.deploy.manifest_podman_run import ContainerRun, translate
from hospital_mlops.deploy.manifest_pods import PodSource, deployment_pod, inference_service_pod

SERVICE_PORT = 80  # Knative serves an InferenceService component's Service on 80


class WorkloadError(RuntimeError):
    """A workload that cannot start as declared, or never became ready; the message names the
    manifest field or the probe."""


@dataclass(frozen=True)
class StandIns:
    """What stands in for the cluster's Secrets and ConfigMaps (test values only)."""

    secrets: Mapping[str, Mapping[str, str]]
    config_maps: Mapping[str, Mapping[str, str]]  # ConfigMap → file name → content


@dataclass
class Workload:
    """One container of the overlay: where it was declared, how it runs, how to reach it."""

    where: str  # Deployment/readmission-cds, InferenceService/readmission spec.predictor
    component: str  # cds, detector, predictor, explainer
    container: str  # podman's name for it
    run: ContainerRun
    doc: Mapping[str, Any] = field(repr=False)
    ip: str = ""

    @property
    def base(self) -> str:
        return f"http://{self.ip}:8080"

    @property
    def readiness(self) -> HttpProbe:
        if self.run.readiness is None:
            raise WorkloadError(f"{self.where}: no readinessProbe declared")
        return self.run.readiness


# a Deployment's role by its app.kubernetes.io/name label: any model's detector is a detector
ROLES = {"cds-hooks": "cds", "drift-detector": "detector"}


def _component(doc: Mapping[str, Any]) -> str:
    labels = doc["metadata"].get("labels") or {}
    return ROLES.get(str(labels.get("app.kubernetes.io/name")), str(doc["metadata"]["name"]))


def _config_map_dirs(
    pod: Mapping[str, Any], values: StandIns, work: Path, where: str
) -> dict[str, str]:
    """The ConfigMap volumes' contents as directories (for the translation's check)."""
    dirs: dict[str, str] = {}
    for volume in pod.get("volumes", []):
        ref = volume.get("configMap")
        if ref is None:
            continue
        name = str(ref.get("name"))
        if name not in values.config_maps:
            raise WorkloadError(
                f"{where}.volumes[{volume.get('name')}].configMap: no test value for ConfigMap "
                f"{name!r}"
            )
        directory = work / "configmaps" / name
        directory.mkdir(parents=True, exist_ok=True)
        for file, content in values.config_maps[name].items():
            (directory / file).write_text(content)
        dirs[str(volume["name"])] = str(directory)
    return dirs


def plan(
    docs: Sequence[Mapping[str, Any]], values: StandIns, work: Path, prefix: str
) -> list[Workload]:
    """Every container the overlay runs, translated with the test values (which checks every
    Secret key, ConfigMap and volume it names), predictor first."""
    sources: list[tuple[Mapping[str, Any], str, PodSource]] = []
    for doc in docs:
        if doc.get("kind") == "Deployment":
            sources.append((doc, _component(doc), deployment_pod(doc)))
        elif doc.get("kind") == "InferenceService":
            for part in ("predictor", "explainer"):
                if part in doc.get("spec", {}):
                    sources.append((doc, part, inference_service_pod(doc, part)))
    order = {"predictor": 0, "explainer": 1, "detector": 2, "cds": 3}
    sources.sort(key=lambda s: order.get(s[1], 9))
    workloads = []
    for doc, component, source in sources:
        dirs = _config_map_dirs(source.spec, values, work, source.where)
        try:
            run = translate(source, secrets=values.secrets, volume_dirs=dirs)
        except ValueError as exc:
            raise WorkloadError(str(exc)) from None
        if doc["kind"] == "Deployment":
            (container,) = source.spec["containers"]
            name = f"{doc['metadata']['name']}-pod-0-{container['name']}"  # podman's naming
        else:
            name = f"{prefix}-{component}"
        workloads.append(Workload(run.where, component, name, run, doc))
    return workloads


# --------------------------------------------------------------------------------- starting


def _secret_payload(data: Mapping[str, str]) -> str:
    """The flat JSON map {key: base64 value} podman 4.3.1's kube play reads a Secret as."""
    return json.dumps({k: base64.b64encode(v.encode()).decode() for k, v in data.items()})


def create_secrets(values: StandIns) -> None:
    for name, data in values.secrets.items():
        podman("secret", "rm", name, check=False)
        podman("secret", "create", name, "-", stdin=_secret_payload(data))


def remove_secrets(values: StandIns) -> None:
    for name in values.secrets:
        podman("secret", "rm", name, check=False)


def kube_yaml(
    workloads: Sequence[Workload], values: StandIns, image: str, aliases: Mapping[str, str]
) -> str:
    """The documents ``podman kube play`` runs: the test ConfigMaps, then each Deployment as
    rendered, with only the local image (pulled never), the Service names' host aliases and one
    replica."""
    wanted = _volume_names(workloads)
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": dict(data)}
        for name, data in values.config_maps.items()
        if name in wanted
    ]
    for workload in workloads:
        if workload.doc.get("kind") != "Deployment":
            continue
        doc = copy.deepcopy(dict(workload.doc))
        # podman 4.3.1 makes one pod per replica and binds every one's containerPort on the
        # host's own port: a second replica cannot start. One pod, as the translation runs.
        doc["spec"]["replicas"] = 1
        pod = doc["spec"]["template"]["spec"]
        for container in pod["containers"]:
            container["image"] = image
            container["imagePullPolicy"] = "Never"
        pod["hostAliases"] = [
            {"ip": ip, "hostnames": [host for host, at in aliases.items() if at == ip]}
            for ip in sorted(set(aliases.values()))
        ]
        docs.append(doc)
    return yaml.safe_dump_all(docs, sort_keys=False)


def start_inference_services(
    workloads: Sequence[Workload], image: str, aliases: Mapping[str, str]
) -> None:
    """The InferenceService components as KServe's pods (the predictor first, also published at
    the Service stand-in)."""
    for workload in workloads:
        if workload.doc.get("kind") != "InferenceService":
            continue
        publish: list[tuple[str, int, int | str]] = []
        if workload.component == "predictor":
            publish.append((GATEWAY, SERVICE_PORT, 8080))
        argv = workload.run.podman_args(
            image,
            name=workload.container,
            network=NETWORK,
            publish=publish,
            add_hosts=aliases if workload.component != "predictor" else None,
        )
        podman("rm", "--force", "--ignore", workload.container, check=False)
        podman(*argv, timeout=120)
        workload.ip = container_ip(workload.container)


def stop_inference_services(workloads: Sequence[Workload]) -> None:
    for workload in workloads:
        if workload.doc.get("kind") == "InferenceService":
            podman("rm", "--force", "--ignore", "--time", "5", workload.container, check=False)


@contextlib.contextmanager
def played(
    workload: Workload,
    values: StandIns,
    image: str,
    work: Path,
    aliases: Mapping[str, str],
    ready_timeout: float,
) -> Iterator[float]:
    """One Deployment through ``podman kube play``, ready; its pod, volumes and ConfigMaps
    removed afterwards. One at a time: podman 4.3.1 publishes every ``containerPort`` on the
    host's own port, so two pods declaring 8080 cannot run at once (docs/deployment.md)."""
    _host_ports_free(workload)
    file = work / f"kube-play-{workload.component}.yaml"
    file.write_text(kube_yaml([workload], values, image, aliases))
    _remove_volumes([workload])  # an earlier run's emptyDir volume would be reused (podman 4.3)
    try:
        playing = podman("kube", "play", "--network", NETWORK, str(file), check=False, timeout=300)
        if playing.returncode != 0:
            raise WorkloadError(
                f"{workload.where}: podman kube play refused it: {_podman_errors(playing.stderr)}"
            )
        workload.ip = container_ip(workload.container)
        yield wait_ready([workload], ready_timeout)[workload.component]
    finally:
        podman("kube", "down", str(file), check=False, timeout=120)
        podman("rm", "--force", "--ignore", "--time", "5", workload.container, check=False)
        _remove_volumes([workload])


def _podman_errors(stderr: str) -> str:
    """podman's own complaints, without 4.3.1's healthcheck noise: there is no systemd here to
    run a livenessProbe's timer, and kube play logs that as an error and goes on."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and "systemd connection" not in line
    ]
    return "; ".join(lines)[-1500:]


def _host_ports_free(workload: Workload) -> None:
    """podman 4.3.1's kube play binds each declared containerPort on the host (0.0.0.0): say so
    plainly when another process holds one, rather than podman's "address already in use"."""
    import psutil

    for port in sorted(set(workload.run.ports.values())):
        holders = [
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port
        ]
        if holders:
            names = []
            for pid in holders:
                with contextlib.suppress(psutil.Error):
                    names.append(" ".join(psutil.Process(pid).cmdline()[:4]) if pid else "?")
            raise WorkloadError(
                f"{workload.where}: podman kube play publishes containerPort {port} on the "
                f"host, and port {port} is taken by {names or holders}"
            )


def _volume_names(workloads: Sequence[Workload]) -> set[str]:
    names: set[str] = set()
    for workload in workloads:
        if workload.doc.get("kind") != "Deployment":
            continue
        for volume in workload.doc["spec"]["template"]["spec"].get("volumes", []):
            names.add(str(volume["name"]))
            if "configMap" in volume:
                names.add(str(volume["configMap"]["name"]))
    return names


def _remove_volumes(workloads: Sequence[Workload]) -> None:
    for name in sorted(_volume_names(workloads)):
        podman("volume", "rm", "--force", name, check=False)


# -------------------------------------------------------------------------------- readiness


def _probe_once(url: str, timeout: float) -> int | None:
    """The probe's HTTP status, or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return None


def wait_ready(workloads: Sequence[Workload], timeout: float) -> dict[str, float]:
    """Seconds until each workload's readiness probe answered 200 (probed at the container's
    address, at most once a second). A container that exits, a probe answered 404
    ``failureThreshold`` times in a row (the path does not exist), or the deadline, fails the run
    naming the workload and its probe."""
    started = time.monotonic()
    deadline = started + timeout
    ready: dict[str, float] = {}
    not_found = {w.container: 0 for w in workloads}
    last: dict[str, int | None] = {}
    while len(ready) < len(workloads):
        for workload in workloads:
            if workload.container in ready:
                continue
            probe = workload.readiness
            url = probe.url(workload.ip)
            status, code = state(workload.container)
            if status not in ("running", "created", "configured"):
                raise WorkloadError(
                    f"{workload.where}: the container {status} (exit code {code}) before its "
                    f"readiness probe passed:\n{logs(workload.container)}"
                )
            answer = _probe_once(url, max(1.0, float(probe.timeout_seconds)))
            last[workload.container] = answer
            if answer == 200:
                ready[workload.container] = time.monotonic() - started
                continue
            misses = not_found[workload.container]
            not_found[workload.container] = misses + 1 if answer == 404 else 0
            if not_found[workload.container] >= probe.failure_threshold:
                raise WorkloadError(
                    f"{workload.where}.readinessProbe: GET {probe.path} on port {probe.port} "
                    f"answered 404 {probe.failure_threshold} times: the server has no such path "
                    "(the pod would never be ready)"
                )
        if len(ready) < len(workloads):
            if time.monotonic() > deadline:
                waiting = [w for w in workloads if w.container not in ready]
                raise WorkloadError(
                    "not ready within "
                    f"{timeout:.0f} s: "
                    + "; ".join(
                        f"{w.where}.readinessProbe GET {w.readiness.path} (last answer: "
                        f"{last.get(w.container) or 'none'})"
                        for w in waiting
                    )
                    + f"\n{logs(waiting[0].container)}"
                )
            time.sleep(1.0)
    return {w.component: round(ready[w.container], 1) for w in workloads}


@contextlib.contextmanager
def serving(
    docs: Sequence[Mapping[str, Any]],
    values: StandIns,
    image: str,
    work: Path,
    *,
    prefix: str,
    aliases: Mapping[str, str],
    ready_timeout: float = 360.0,
) -> Iterator[tuple[dict[str, Workload], dict[str, float]]]:
    """Every workload checked (``plan``), the Secrets made, the InferenceService components
    started and ready; the Deployments are played one at a time with ``played``. Everything
    removed afterwards, whatever happened."""
    workloads = plan(docs, values, work, prefix)
    try:
        create_secrets(values)
        start_inference_services(workloads, image, aliases)
        services = [w for w in workloads if w.doc.get("kind") == "InferenceService"]
        seconds = wait_ready(services, ready_timeout)
        yield {w.component: w for w in workloads}, seconds
    finally:
        stop_inference_services(workloads)
        remove_secrets(values)
