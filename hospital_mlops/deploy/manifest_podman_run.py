"""One container of a rendered cluster manifest as the ``podman run`` that reproduces it.

The container suite runs the serving image the way the production overlay declares it: the
arguments, the security context, the volumes and the environment come from the rendered
manifest (``kubectl kustomize``) through ``translate``, never from a hand-written command line.
Pure: it reads only the dicts and test values it is given and returns data.

What is translated, and how (``translate``)
-------------------------------------------
* where the pod comes from (a Deployment, or the pod KServe makes of an InferenceService's
  component, with the arguments KServe appends): ``manifest_pods``.
* ``command``, ``workingDir``, ``env``, ``volumeMounts``, ``ports`` and the probes:
  ``manifest_container_spec``. ``args`` and the controller's appended arguments → the arguments
  after the image.
* ``securityContext`` (the pod's and the container's) and ``resources``:
  ``manifest_confinement``.
* ``image`` and ``imagePullPolicy`` → replaced by the caller's local image and ``--pull never``
  (recorded); ``name`` → recorded (the caller names the container).
* the pod's ``automountServiceAccountToken: false`` → nothing (podman mounts no token either;
  anything else is refused); ``serviceAccountName`` → recorded (the pod's API identity).
* a published port (``ContainerRun.podman_args``) must be one of the declared ports.

Everything else is refused with ``ManifestTranslationError`` (``manifest_refusals``) naming the
field: an unknown or untranslated field (``envFrom``, ``lifecycle``, an ``exec`` probe,
``subPath``, a ``hostPath`` volume, ``privileged: true``, a ``Localhost`` seccomp profile,
``$(VAR)`` expansion in the command, arguments or values, a token automounted, …), an
unresolved Secret or ConfigMap key, a probe's named port the container does not declare.
Nothing is invented and nothing is dropped silently: what has no runtime effect on one container
(replicas, the Service account, KServe's scaling, timeout and logger) is listed in
``ContainerRun.not_reproduced`` with why.

The caller's environment, not the manifest, supplies only: the image (a local digest), the
container name, the network, the published ports (``--publish HOST_IP:HOST_PORT:PORT``), host
aliases (``--add-host``: the stand-in for a Kubernetes Service's DNS name) and writable bind
mounts standing in for what the Secrets' URLs reach on a cluster (a SQLite registry, a database
directory), all through ``ContainerRun.podman_args``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hospital_mlops.deploy.manifest_confinement import resource_options, security_options
from hospital_mlops.deploy.manifest_container_spec import (
    HttpProbe,
    command_options,
    declared_ports,
    env_values,
    http_probe,
    volume_options,
)
from hospital_mlops.deploy.manifest_pods import PodSource
from hospital_mlops.deploy.manifest_refusals import (
    ManifestTranslationError,
    refuse_unknown,
    required_mapping,
    string_list,
)

_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "workingDir", "env", "ports",
    "resources", "securityContext", "volumeMounts", "readinessProbe", "livenessProbe",
    "startupProbe",
}  # fmt: skip
_POD_FIELDS = {
    "containers", "volumes", "securityContext", "serviceAccountName",
    "automountServiceAccountToken",
}  # fmt: skip


@dataclass(frozen=True)
class ContainerRun:
    """One container, translated: ``podman_args`` gives the ``podman run`` command line."""

    where: str
    name: str
    manifest_image: str
    options: tuple[str, ...]
    args: tuple[str, ...]
    ports: Mapping[str, int]  # declared container ports: name (or the number) → port
    readiness: HttpProbe | None
    liveness: HttpProbe | None
    startup: HttpProbe | None
    env: Mapping[str, str]  # what --env sets (test values included)
    not_reproduced: Mapping[str, str]

    def port(self, ref: int | str) -> int:
        """A declared container port, by name or number."""
        key = str(ref)
        if key in self.ports:
            return self.ports[key]
        if isinstance(ref, int) and ref in self.ports.values():
            return ref
        raise ManifestTranslationError(
            f"{self.where} ports: no port {ref!r} declared (declared: {dict(self.ports)})"
        )

    def podman_args(
        self,
        image: str,
        *,
        name: str,
        publish: Sequence[tuple[str, int, int | str]] = (),
        add_hosts: Mapping[str, str] | None = None,
        network: str | None = None,
        binds: Sequence[tuple[str, str]] = (),
        detach: bool = True,
    ) -> list[str]:
        """``podman run …`` (without the ``podman``): the caller's environment (the name, the
        network, published ports ``(host_ip, host_port, port)`` with the port a declared one,
        host aliases, and writable bind mounts ``(host_dir, path)`` that stand in for what a
        Secret's URL reaches on a cluster: a SQLite registry, a database directory), then the
        translated options, the image and the arguments."""
        run = ["run", *(["--detach"] if detach else []), "--name", name]
        if network:
            run += ["--network", network]
        for host_ip, host_port, ref in publish:
            run += ["--publish", f"{host_ip}:{int(host_port)}:{self.port(ref)}"]
        for host, ip in (add_hosts or {}).items():
            run += ["--add-host", f"{host}:{ip}"]
        for source, target in binds:
            if "," in source or "," in target or not target.startswith("/"):
                raise ManifestTranslationError(f"bind {source} → {target}: not mountable")
            run += ["--mount", f"type=bind,src={source},dst={target}"]
        return [*run, *self.options, image, *self.args]


def translate(
    source: PodSource,
    container: str | None = None,
    *,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    config_maps: Mapping[str, Mapping[str, str]] | None = None,
    volume_dirs: Mapping[str, str] | None = None,
) -> ContainerRun:
    """The ``podman run`` options for one container of ``source`` (the only one when
    ``container`` is None). ``secrets``/``config_maps``: test values per object name and key,
    for env refs; ``volume_dirs``: a host directory per configMap/secret volume name."""
    pod = source.spec
    refuse_unknown(pod, _POD_FIELDS, source.where)
    notes = dict(source.not_reproduced)
    if pod.get("automountServiceAccountToken") is not False:
        raise ManifestTranslationError(
            f"{source.where}.automountServiceAccountToken: must be false (a Service account "
            "token would be mounted in the pod; podman mounts none)"
        )
    if "serviceAccountName" in pod:
        notes[f"{source.where}.serviceAccountName"] = "the pod's API identity: no API here"
    containers = list(pod.get("containers") or [])
    if container is None and len(containers) != 1:
        raise ManifestTranslationError(f"{source.where}.containers: name the container")
    found = [c for c in containers if container is None or c.get("name") == container]
    if len(found) != 1:
        raise ManifestTranslationError(f"{source.where}.containers: no container {container!r}")
    spec = required_mapping(found[0], f"{source.where}.containers[]")
    where = f"{source.where}.containers[{spec.get('name', '?')}]"
    refuse_unknown(spec, _CONTAINER_FIELDS, where)

    notes[f"{where}.image"] = (
        f"{spec.get('image')}: replaced by the caller's local image (--pull never)"
    )
    if "imagePullPolicy" in spec:
        notes[f"{where}.imagePullPolicy"] = "the image is local: --pull never"
    options: list[str] = ["--pull", "never"]
    options += command_options(spec, where)
    options += security_options(pod, spec, where, source.where)
    options += resource_options(spec, where, notes)
    options += volume_options(pod, spec, where, source.where, volume_dirs or {})
    env = env_values(spec, where, secrets or {}, config_maps or {})
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    args = [*string_list(spec.get("args", []), f"{where}.args"), *source.appended_args]
    ports = declared_ports(spec, where)
    probes = {
        kind: http_probe(spec, f"{kind}Probe", kind, ports, where)
        for kind in ("readiness", "liveness", "startup")
    }
    return ContainerRun(
        where=where,
        name=str(spec.get("name", "")),
        manifest_image=str(spec.get("image", "")),
        options=tuple(options),
        args=tuple(args),
        ports=ports,
        readiness=probes["readiness"],
        liveness=probes["liveness"],
        startup=probes["startup"],
        env=env,
        not_reproduced=notes,
    )
