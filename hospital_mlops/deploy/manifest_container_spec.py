"""A container spec's own parts, translated to ``podman run`` options and data.

* ``command`` → ``--entrypoint '["…", …]'`` (the JSON form; it resets the image's CMD, as
  Kubernetes does); ``workingDir`` → ``--workdir``.
* ``env[].value`` → ``--env NAME=value``. ``env[].valueFrom.secretKeyRef`` / ``configMapKeyRef``
  → ``--env NAME=<the caller's test value for that Secret/ConfigMap key>``; a ref with no test
  value is an error naming the object and key, unless ``optional: true`` (then the variable is
  unset, as Kubernetes leaves it). A later duplicate name wins, as in Kubernetes.
* a ``volumeMount`` of an ``emptyDir`` → ``--tmpfs PATH:rw,size=<sizeLimit in bytes>``
  (podman's tmpfs: mode 1777, nosuid, nodev; a full one answers ENOSPC where the kubelet would
  evict the pod). A ``volumeMount`` of a ``configMap`` or ``secret`` → ``--mount
  type=bind,src=<the caller's directory for that volume>,dst=PATH,ro`` (always read-only, as
  Kubernetes mounts them).
* ``ports`` → the declared ports by name (TCP only).
* ``readinessProbe`` / ``livenessProbe`` / ``startupProbe`` (``httpGet``) → ``HttpProbe``
  (path, the port with a named port resolved, Kubernetes' timings): the caller polls them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hospital_mlops.deploy.manifest_confinement import quantity_bytes
from hospital_mlops.deploy.manifest_refusals import (
    ManifestTranslationError,
    refuse_expansion,
    refuse_unknown,
    required_mapping,
    string_list,
)

_PROBE_FIELDS = {
    "httpGet", "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
    "successThreshold",
}  # fmt: skip
_HTTP_GET_FIELDS = {"path", "port", "scheme"}
_MOUNT_FIELDS = {"name", "mountPath", "readOnly"}


@dataclass(frozen=True)
class HttpProbe:
    """An ``httpGet`` probe, its port resolved to a number (Kubernetes' defaults filled in)."""

    kind: str  # readiness, liveness, startup
    path: str
    port: int
    scheme: str = "HTTP"
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    failure_threshold: int = 3
    success_threshold: int = 1

    def url(self, host: str, host_port: int | None = None) -> str:
        """The probe's URL on ``host`` (at ``host_port`` where the port is published)."""
        return f"{self.scheme.lower()}://{host}:{host_port or self.port}{self.path}"


def command_options(spec: Mapping[str, Any], where: str) -> list[str]:
    """``--entrypoint`` (JSON form) and ``--workdir``."""
    options: list[str] = []
    if "command" in spec:
        command = string_list(spec["command"], f"{where}.command")
        options += ["--entrypoint", json.dumps(command)]
    if "workingDir" in spec:
        options += ["--workdir", str(spec["workingDir"])]
    return options


def volume_options(
    pod: Mapping[str, Any],
    spec: Mapping[str, Any],
    where: str,
    pod_where: str,
    volume_dirs: Mapping[str, str],
) -> list[str]:
    """``--tmpfs`` for each emptyDir mount, a read-only bind ``--mount`` for each configMap or
    secret mount (from the caller's directory for that volume)."""
    volumes = {}
    for i, volume in enumerate(pod.get("volumes", [])):
        v = required_mapping(volume, f"{pod_where}.volumes[{i}]")
        volumes[str(v.get("name"))] = v
    options: list[str] = []
    seen: set[str] = set()
    for i, mount in enumerate(spec.get("volumeMounts", [])):
        m = required_mapping(mount, f"{where}.volumeMounts[{i}]")
        at = f"{where}.volumeMounts[{m.get('name', i)}]"
        refuse_unknown(m, _MOUNT_FIELDS, at)
        name, path = str(m.get("name")), m.get("mountPath")
        if not isinstance(path, str) or not path.startswith("/"):
            raise ManifestTranslationError(f"{at}.mountPath: an absolute path is required")
        if name not in volumes:
            raise ManifestTranslationError(f"{at}.name: no volume {name!r} in {pod_where}.volumes")
        if name in seen:
            raise ManifestTranslationError(
                f"{at}: volume {name!r} mounted twice (shared contents are not reproduced)"
            )
        seen.add(name)
        volume = volumes[name]
        vwhere = f"{pod_where}.volumes[{name}]"
        kinds = sorted(set(volume) - {"name"})
        if kinds == ["emptyDir"]:
            empty = required_mapping(volume["emptyDir"] or {}, f"{vwhere}.emptyDir")
            refuse_unknown(empty, {"sizeLimit", "medium"}, f"{vwhere}.emptyDir")
            if empty.get("medium", "") not in ("", "Memory"):
                raise ManifestTranslationError(f"{vwhere}.emptyDir.medium: {empty['medium']!r}")
            if m.get("readOnly"):
                raise ManifestTranslationError(f"{at}.readOnly: a read-only emptyDir")
            tmpfs = f"{path}:rw"
            if "sizeLimit" in empty:
                size = quantity_bytes(empty["sizeLimit"], f"{vwhere}.emptyDir.sizeLimit")
                tmpfs += f",size={size}"
            options += ["--tmpfs", tmpfs]
        elif kinds in (["configMap"], ["secret"]):
            kind = kinds[0]
            ref = required_mapping(volume[kind], f"{vwhere}.{kind}")
            key = "name" if kind == "configMap" else "secretName"
            refuse_unknown(ref, {key}, f"{vwhere}.{kind}")
            directory = volume_dirs.get(name)
            if not directory:
                raise ManifestTranslationError(
                    f"{vwhere}.{kind}: no test directory for {kind} {ref.get(key)!r} "
                    f"(volume {name!r})"
                )
            if "," in directory or "," in path:
                raise ManifestTranslationError(f"{at}: a path with a comma cannot be mounted")
            options += ["--mount", f"type=bind,src={directory},dst={path},ro"]
        else:
            raise ManifestTranslationError(
                f"{vwhere}.{'/'.join(kinds) or '?'}: volume type not translated "
                "(emptyDir, configMap and secret are)"
            )
    return options


def env_values(
    spec: Mapping[str, Any],
    where: str,
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    """The environment: literal values and the caller's test values for Secret and ConfigMap
    key refs (a later duplicate wins)."""
    env: dict[str, str] = {}
    for i, entry in enumerate(spec.get("env", [])):
        e = required_mapping(entry, f"{where}.env[{i}]")
        name = e.get("name")
        at = f"{where}.env[{name or i}]"
        if not isinstance(name, str) or not name:
            raise ManifestTranslationError(f"{at}.name: required")
        refuse_unknown(e, {"name", "value", "valueFrom"}, at)
        if "valueFrom" not in e:
            value = str(e.get("value", ""))
            refuse_expansion(value, f"{at}.value")
            env.pop(name, None)  # a later duplicate wins, in Kubernetes' order
            env[name] = value
            continue
        if "value" in e:
            raise ManifestTranslationError(f"{at}: both value and valueFrom")
        source = required_mapping(e["valueFrom"], f"{at}.valueFrom")
        refuse_unknown(source, {"secretKeyRef", "configMapKeyRef"}, f"{at}.valueFrom")
        if len(source) != 1:
            raise ManifestTranslationError(f"{at}.valueFrom: exactly one source")
        kind, ref = next(iter(source.items()))
        ref = required_mapping(ref, f"{at}.valueFrom.{kind}")
        refuse_unknown(ref, {"name", "key", "optional"}, f"{at}.valueFrom.{kind}")
        values = secrets if kind == "secretKeyRef" else config_maps
        obj, key = str(ref.get("name")), str(ref.get("key"))
        found = values.get(obj, {})
        if key in found:
            env.pop(name, None)
            env[name] = str(found[key])
        elif not ref.get("optional"):
            what = "Secret" if kind == "secretKeyRef" else "ConfigMap"
            raise ManifestTranslationError(
                f"{at}.valueFrom.{kind}: no test value for {what} {obj!r} key {key!r}"
            )
    return env


def declared_ports(spec: Mapping[str, Any], where: str) -> dict[str, int]:
    """The container's TCP ports, by name (or by number where unnamed)."""
    ports: dict[str, int] = {}
    for i, entry in enumerate(spec.get("ports", [])):
        p = required_mapping(entry, f"{where}.ports[{i}]")
        at = f"{where}.ports[{p.get('name', i)}]"
        refuse_unknown(p, {"containerPort", "name", "protocol"}, at)
        if p.get("protocol", "TCP") != "TCP":
            raise ManifestTranslationError(f"{at}.protocol: only TCP is translated")
        number = int(p["containerPort"])
        ports[str(p.get("name", number))] = number
    return ports


def http_probe(
    spec: Mapping[str, Any], key: str, kind: str, ports: Mapping[str, int], where: str
) -> HttpProbe | None:
    """The ``key`` probe (``readinessProbe``, …) as an ``HttpProbe``, or None when absent."""
    if key not in spec:
        return None
    at = f"{where}.{key}"
    probe = required_mapping(spec[key], at)
    refuse_unknown(probe, _PROBE_FIELDS, at)
    if "httpGet" not in probe:
        raise ManifestTranslationError(f"{at}: only httpGet probes are translated")
    get = required_mapping(probe["httpGet"], f"{at}.httpGet")
    refuse_unknown(get, _HTTP_GET_FIELDS, f"{at}.httpGet")
    port = get.get("port")
    if isinstance(port, str) and not port.isdigit():
        if port not in ports:
            raise ManifestTranslationError(
                f"{at}.httpGet.port: no port named {port!r} in the container's ports "
                f"(declared: {sorted(ports)})"
            )
        number = ports[port]
    else:
        number = int(str(port))
    scheme = str(get.get("scheme", "HTTP"))
    if scheme not in ("HTTP", "HTTPS"):
        raise ManifestTranslationError(f"{at}.httpGet.scheme: {scheme!r}")
    return HttpProbe(
        kind=kind,
        path=str(get.get("path", "/")),
        port=number,
        scheme=scheme,
        initial_delay_seconds=int(probe.get("initialDelaySeconds", 0)),
        period_seconds=int(probe.get("periodSeconds", 10)),
        timeout_seconds=int(probe.get("timeoutSeconds", 1)),
        failure_threshold=int(probe.get("failureThreshold", 3)),
        success_threshold=int(probe.get("successThreshold", 1)),
    )
