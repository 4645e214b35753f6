"""One container of a rendered cluster manifest as the ``podman run`` that reproduces it.

The container suite runs the serving image the way the production overlay declares it: the
arguments, the security context, the volumes and the environment come from the rendered
manifest (``kubectl kustomize``) through this module, never from a hand-written command line.
Pure: it reads only the dicts and test values it is given and returns data.

Where a container comes from
----------------------------
* ``deployment_pod(doc)``: a Deployment's pod template. The Deployment's own fields (replicas,
  strategy, selector, …) and the template's labels/annotations are recorded as not reproduced.
* ``inference_service_pod(isvc, component)``: an InferenceService's ``predictor`` or
  ``explainer`` (KServe 0.20 custom containers). KServe's component fields (scaling, timeout,
  the logger, canary traffic) are recorded as not reproduced. For the explainer, KServe edits the
  arguments (``CustomExplainer.GetContainer``): ``--model_name <isvc>`` appended unless an
  argument starts with ``--model_name``, ``--predictor_host <isvc>-predictor.<namespace>``
  unless one starts with ``--predictor_host``, ``--http_port 8080`` always, and
  ``--workers <containerConcurrency>`` when that is set and no argument starts with
  ``--workers`` (``kserve_explainer_args``; docs/deployment.md). The predictor gets nothing
  appended.

What is translated, and how (``translate``)
-------------------------------------------
* ``command`` → ``--entrypoint '["…", …]'`` (the JSON form; it resets the image's CMD, as
  Kubernetes does); ``args`` and the controller's appended arguments → the arguments after the
  image; ``workingDir`` → ``--workdir``.
* ``env[].value`` → ``--env NAME=value``. ``env[].valueFrom.secretKeyRef`` / ``configMapKeyRef``
  → ``--env NAME=<the caller's test value for that Secret/ConfigMap key>``; a ref with no test
  value is an error naming the object and key, unless ``optional: true`` (then the variable is
  unset, as Kubernetes leaves it). A later duplicate name wins, as in Kubernetes.
* ``securityContext.runAsUser`` / ``runAsGroup`` (the container's over the pod's) →
  ``--user UID[:GID]``; ``runAsNonRoot`` is checked: the uid must be set and not 0. The pod's
  ``fsGroup`` and ``supplementalGroups`` → ``--group-add`` each.
* ``readOnlyRootFilesystem: true`` → ``--read-only --read-only-tmpfs=false``. podman's
  ``--read-only`` alone mounts writable tmpfs on /tmp, /run and /var/tmp, which a pod does not
  have: a container would then run without its /tmp emptyDir and nobody would notice.
* ``allowPrivilegeEscalation: false`` → ``--security-opt no-new-privileges``;
  ``capabilities.drop`` / ``add`` → ``--cap-drop X`` / ``--cap-add X`` each;
  ``privileged: false`` → nothing (the default); ``seccompProfile: RuntimeDefault`` (the
  container's over the pod's) → nothing: podman's default profile is the runtime's default.
* ``resources.limits.cpu`` → ``--cpus`` (the CFS quota the kubelet sets);
  ``resources.limits.memory`` → ``--memory`` and ``--memory-swap`` of the same size (no swap,
  as on a node); ``resources.requests.cpu`` → ``--cpu-shares`` (millicores × 1024 / 1000, the
  kubelet's cpu.shares). ``resources.requests.memory`` only schedules: recorded.
* a ``volumeMount`` of an ``emptyDir`` → ``--tmpfs PATH:rw,size=<sizeLimit in bytes>``
  (podman's tmpfs: mode 1777, nosuid, nodev; a full one answers ENOSPC where the kubelet would
  evict the pod). A ``volumeMount`` of a ``configMap`` or ``secret`` → ``--mount
  type=bind,src=<the caller's directory for that volume>,dst=PATH,ro`` (always read-only, as
  Kubernetes mounts them).
* ``ports`` → the declared ports by name; a published port (``ContainerRun.podman_args``) must
  be one of them.
* ``readinessProbe`` / ``livenessProbe`` / ``startupProbe`` (``httpGet``) → returned as data
  (``HttpProbe``: path, the port with a named port resolved, Kubernetes' timings): the caller
  polls them.
* ``image`` and ``imagePullPolicy`` → replaced by the caller's local image and ``--pull never``
  (recorded); ``name`` → recorded (the caller names the container).
* the pod's ``automountServiceAccountToken: false`` → nothing (podman mounts no token either;
  anything else is refused); ``serviceAccountName`` → recorded (the pod's API identity).

Everything else is refused with ``ManifestTranslationError`` naming the field: an unknown or
untranslated field (``envFrom``, ``lifecycle``, an ``exec`` probe, ``subPath``, a ``hostPath``
volume, ``privileged: true``, a ``Localhost`` seccomp profile, ``$(VAR)`` expansion in the
command, arguments or values, a token automounted, …), an unresolved Secret or ConfigMap key,
a probe's named port the container does not declare. Nothing is invented and nothing is
dropped silently: what has no runtime effect on one container (replicas, the Service account,
KServe's scaling, timeout and logger) is listed in ``ContainerRun.not_reproduced`` with why.

The caller's environment, not the manifest, supplies only: the image (a local digest), the
container name, the network, the published ports (``--publish HOST_IP:HOST_PORT:PORT``), host
aliases (``--add-host``: the stand-in for a Kubernetes Service's DNS name) and writable bind
mounts standing in for what the Secrets' URLs reach on a cluster (a SQLite registry, a database
directory), all through ``ContainerRun.podman_args``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

KSERVE_HTTP_PORT = "8080"  # constants.InferenceServiceDefaultHttpPort


class ManifestTranslationError(ValueError):
    """A manifest field this translation cannot honour, or a value it cannot resolve; the
    message names the field."""


# ----------------------------------------------------------------------------------- the sources


@dataclass(frozen=True)
class PodSource:
    """A pod spec as some controller will run it: where it came from, the arguments the
    controller appends to its container, and the controller's fields with no runtime effect on
    the container (field → why)."""

    where: str
    spec: Mapping[str, Any]
    appended_args: tuple[str, ...] = ()
    not_reproduced: Mapping[str, str] = field(default_factory=dict)


_DEPLOYMENT_FIELDS = {
    "replicas": "one container here",
    "strategy": "rollout strategy: one container here",
    "selector": "the Deployment's pod selector: no runtime effect on the container",
    "revisionHistoryLimit": "rollout history: no runtime effect on the container",
    "minReadySeconds": "rollout pacing: no runtime effect on the container",
    "progressDeadlineSeconds": "rollout pacing: no runtime effect on the container",
}
_TEMPLATE_META = {"labels", "annotations"}

_KSERVE_COMPONENT_FIELDS = {
    "minReplicas": "scaling: one container here",
    "maxReplicas": "scaling: one container here",
    "scaleMetric": "scaling: one container here",
    "scaleTarget": "scaling: one container here",
    "canaryTrafficPercent": "traffic split between revisions: one container here",
    "timeout": "request timeout enforced by Knative's queue-proxy, not reproduced",
    "containerConcurrency": "enforced by Knative's queue-proxy (KServe appends --workers to a "
    "custom explainer's arguments for it: done)",
    "logger": "the KServe agent sidecar posts request/response CloudEvents: not reproduced "
    "(post the events yourself)",
    "labels": "pod metadata: no runtime effect on the container",
    "annotations": "pod metadata: no runtime effect on the container",
}
_KNATIVE_NOTE = (
    "Knative injects PORT, K_SERVICE, K_CONFIGURATION and K_REVISION into the container's "
    "environment: not reproduced"
)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ManifestTranslationError(f"{where}: expected a mapping, not {type(value).__name__}")
    return value


def _refuse_unknown(
    obj: Mapping[str, Any], known: set[str] | Mapping[str, Any], where: str
) -> None:
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ManifestTranslationError(
            f"{where}.{unknown[0]}: not translated to podman (known here: {sorted(known)})"
        )


def deployment_pod(deployment: Mapping[str, Any]) -> PodSource:
    """The pod a Deployment runs."""
    if deployment.get("kind") != "Deployment":
        raise ManifestTranslationError(f"kind: expected Deployment, not {deployment.get('kind')}")
    name = deployment.get("metadata", {}).get("name", "?")
    where = f"Deployment/{name}"
    spec = _mapping(deployment.get("spec"), f"{where} spec")
    _refuse_unknown(spec, {*_DEPLOYMENT_FIELDS, "template"}, f"{where} spec")
    template = _mapping(spec.get("template"), f"{where} spec.template")
    _refuse_unknown(template, {"metadata", "spec"}, f"{where} spec.template")
    metadata = _mapping(template.get("metadata", {}), f"{where} spec.template.metadata")
    _refuse_unknown(metadata, _TEMPLATE_META, f"{where} spec.template.metadata")
    notes = {f"{where} spec.{k}": why for k, why in _DEPLOYMENT_FIELDS.items() if k in spec}
    for key in metadata:
        notes[f"{where} spec.template.metadata.{key}"] = "pod metadata: no effect on the container"
    pod = _mapping(template.get("spec"), f"{where} spec.template.spec")
    return PodSource(f"{where} spec.template.spec", pod, (), notes)


def kserve_explainer_args(isvc: Mapping[str, Any]) -> list[str]:
    """The explainer's arguments as KServe 0.20 runs them (``CustomExplainer.GetContainer``):
    ``--model_name`` and ``--predictor_host`` appended unless an argument starts with them,
    ``--http_port 8080`` appended always, ``--workers N`` when ``containerConcurrency`` is set
    and no argument starts with ``--workers``."""
    explainer = isvc["spec"]["explainer"]
    args = [str(a) for a in explainer["containers"][0].get("args", [])]
    meta = isvc["metadata"]
    if not any(a.startswith("--model_name") for a in args):
        args += ["--model_name", str(meta["name"])]
    if not any(a.startswith("--predictor_host") for a in args):
        args += ["--predictor_host", f"{meta['name']}-predictor.{meta['namespace']}"]
    args += ["--http_port", KSERVE_HTTP_PORT]
    concurrency = explainer.get("containerConcurrency")
    if concurrency is not None and not any(a.startswith("--workers") for a in args):
        args += ["--workers", str(int(concurrency))]
    return args


def inference_service_pod(isvc: Mapping[str, Any], component: str) -> PodSource:
    """The pod KServe makes of an InferenceService's custom ``predictor`` or ``explainer``."""
    if isvc.get("kind") != "InferenceService":
        raise ManifestTranslationError(f"kind: expected InferenceService, not {isvc.get('kind')}")
    name = isvc.get("metadata", {}).get("name", "?")
    where = f"InferenceService/{name} spec.{component}"
    if component not in ("predictor", "explainer"):
        raise ManifestTranslationError(f"{where}: only predictor and explainer are translated")
    spec = _mapping(isvc.get("spec", {}).get(component), where)
    pod_fields = {k: v for k, v in spec.items() if k not in _KSERVE_COMPONENT_FIELDS}
    notes = {f"{where}.{k}": why for k, why in _KSERVE_COMPONENT_FIELDS.items() if k in spec}
    notes[f"{where} (Knative)"] = _KNATIVE_NOTE
    appended: tuple[str, ...] = ()
    if component == "explainer":
        containers = pod_fields.get("containers") or []
        if len(containers) != 1:
            raise ManifestTranslationError(f"{where}.containers: expected one custom container")
        declared = [str(a) for a in containers[0].get("args", [])]
        appended = tuple(kserve_explainer_args(isvc)[len(declared) :])
    return PodSource(where, pod_fields, appended, notes)


# ------------------------------------------------------------------------------- the translation


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


_CONTAINER_FIELDS = {
    "name", "image", "imagePullPolicy", "command", "args", "workingDir", "env", "ports",
    "resources", "securityContext", "volumeMounts", "readinessProbe", "livenessProbe",
    "startupProbe",
}  # fmt: skip
_POD_FIELDS = {
    "containers", "volumes", "securityContext", "serviceAccountName",
    "automountServiceAccountToken",
}  # fmt: skip
_POD_SECURITY = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile",
}  # fmt: skip
_CONTAINER_SECURITY = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "capabilities", "privileged", "seccompProfile",
}  # fmt: skip
_PROBE_FIELDS = {
    "httpGet", "initialDelaySeconds", "periodSeconds", "timeoutSeconds", "failureThreshold",
    "successThreshold",
}  # fmt: skip
_HTTP_GET_FIELDS = {"path", "port", "scheme"}
_MOUNT_FIELDS = {"name", "mountPath", "readOnly"}
_EXPANSION = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_.-]*\)")


def serving_pods(docs: Sequence[Mapping[str, Any]]) -> dict[str, PodSource]:
    """The four serving containers of a rendered overlay (production or canary): predictor and
    explainer of the InferenceService, the drift detector's and the CDS service's Deployments."""
    from hospital_mlops.deploy import overlay as deploy

    def one(kind: str, name: str) -> Mapping[str, Any]:
        found = [d for d in docs if d.get("kind") == kind and d["metadata"]["name"] == name]
        if len(found) != 1:
            raise ManifestTranslationError(f"{kind}/{name}: {len(found)} in the render, not 1")
        return found[0]

    isvc = one("InferenceService", deploy.SERVICE)
    return {
        "predictor": inference_service_pod(isvc, "predictor"),
        "explainer": inference_service_pod(isvc, "explainer"),
        "detector": deployment_pod(one("Deployment", deploy.DETECTOR)),
        "cds": deployment_pod(one("Deployment", deploy.CDS)),
    }


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
    _refuse_unknown(pod, _POD_FIELDS, source.where)
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
    spec = _mapping(found[0], f"{source.where}.containers[]")
    where = f"{source.where}.containers[{spec.get('name', '?')}]"
    _refuse_unknown(spec, _CONTAINER_FIELDS, where)

    notes[f"{where}.image"] = (
        f"{spec.get('image')}: replaced by the caller's local image (--pull never)"
    )
    if "imagePullPolicy" in spec:
        notes[f"{where}.imagePullPolicy"] = "the image is local: --pull never"
    options: list[str] = ["--pull", "never"]
    options += _command(spec, where)
    options += _security(pod, spec, where, source.where)
    options += _resources(spec, where, notes)
    options += _volumes(pod, spec, where, source.where, volume_dirs or {})
    env = _env(spec, where, secrets or {}, config_maps or {})
    for name, value in env.items():
        options += ["--env", f"{name}={value}"]
    args = [*_strings(spec.get("args", []), f"{where}.args"), *source.appended_args]
    ports = _ports(spec, where)
    probes = {
        kind: _probe(spec, f"{kind}Probe", kind, ports, where)
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


def _strings(values: Any, where: str) -> list[str]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ManifestTranslationError(f"{where}: expected a list of strings")
    for value in values:
        _no_expansion(value, where)
    return list(values)


def _no_expansion(value: str, where: str) -> None:
    if _EXPANSION.search(value):
        raise ManifestTranslationError(
            f"{where}: $(VAR) expansion ({_EXPANSION.search(value)!r}) is not translated"
        )


def _command(spec: Mapping[str, Any], where: str) -> list[str]:
    options: list[str] = []
    if "command" in spec:
        command = _strings(spec["command"], f"{where}.command")
        options += ["--entrypoint", json.dumps(command)]
    if "workingDir" in spec:
        options += ["--workdir", str(spec["workingDir"])]
    return options


# --- security ---------------------------------------------------------------------------------


def _security(
    pod: Mapping[str, Any], spec: Mapping[str, Any], where: str, pod_where: str
) -> list[str]:
    pod_sc = _mapping(pod.get("securityContext", {}), f"{pod_where}.securityContext")
    sc = _mapping(spec.get("securityContext", {}), f"{where}.securityContext")
    _refuse_unknown(pod_sc, _POD_SECURITY, f"{pod_where}.securityContext")
    _refuse_unknown(sc, _CONTAINER_SECURITY, f"{where}.securityContext")

    def pick(key: str) -> Any:
        return sc[key] if key in sc else pod_sc.get(key)

    options: list[str] = []
    uid, gid = pick("runAsUser"), pick("runAsGroup")
    if pick("runAsNonRoot"):
        if uid is None:
            raise ManifestTranslationError(
                f"{where}.securityContext.runAsNonRoot: needs runAsUser here (the image's user "
                "is not checked)"
            )
        if int(uid) == 0:
            raise ManifestTranslationError(f"{where}.securityContext.runAsUser: 0 but runAsNonRoot")
    if uid is not None:
        options += ["--user", f"{int(uid)}" + (f":{int(gid)}" if gid is not None else "")]
    elif gid is not None:
        raise ManifestTranslationError(f"{where}.securityContext.runAsGroup: without runAsUser")
    groups = [pod_sc["fsGroup"]] if "fsGroup" in pod_sc else []
    groups += list(pod_sc.get("supplementalGroups", []))
    for group in dict.fromkeys(int(g) for g in groups):
        options += ["--group-add", str(group)]
    if sc.get("privileged"):
        raise ManifestTranslationError(
            f"{where}.securityContext.privileged: true is not reproduced (never privileged here)"
        )
    if sc.get("readOnlyRootFilesystem"):
        options += ["--read-only", "--read-only-tmpfs=false"]
    if sc.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    caps = _mapping(sc.get("capabilities", {}), f"{where}.securityContext.capabilities")
    _refuse_unknown(caps, {"drop", "add"}, f"{where}.securityContext.capabilities")
    for flag, key in (("--cap-drop", "drop"), ("--cap-add", "add")):
        for cap in _strings(caps.get(key, []), f"{where}.securityContext.capabilities.{key}"):
            options += [flag, cap]
    seccomp = pick("seccompProfile")
    if seccomp is not None:
        profile = _mapping(seccomp, f"{where}.securityContext.seccompProfile")
        if dict(profile) != {"type": "RuntimeDefault"}:
            raise ManifestTranslationError(
                f"{where}.securityContext.seccompProfile: only RuntimeDefault (podman's default "
                f"profile) is translated, not {dict(profile)}"
            )
    return options


# --- resources --------------------------------------------------------------------------------

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
    "P": Decimal("1e15"), "E": Decimal("1e18"),
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")


def parse_quantity(value: Any, where: str) -> Decimal:
    """A Kubernetes resource quantity (``250m``, ``1Gi``, ``2``, ``1e3``) as a number."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if match is None or isinstance(value, bool):
        raise ManifestTranslationError(f"{where}: {value!r} is not a Kubernetes quantity")
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        raise ManifestTranslationError(f"{where}: {value!r} is not a quantity") from None
    suffix = match.group(2) or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix[:1] in ("e", "E"):
        return number * Decimal(10) ** int(suffix[1:])
    return number * _DECIMAL[suffix]


def _bytes(value: Any, where: str) -> int:
    amount = parse_quantity(value, where)
    if amount <= 0:
        raise ManifestTranslationError(f"{where}: {value!r} must be positive")
    return math.ceil(amount)


def _resources(spec: Mapping[str, Any], where: str, notes: dict[str, str]) -> list[str]:
    resources = _mapping(spec.get("resources", {}), f"{where}.resources")
    _refuse_unknown(resources, {"limits", "requests"}, f"{where}.resources")
    limits = _mapping(resources.get("limits", {}), f"{where}.resources.limits")
    requests = _mapping(resources.get("requests", {}), f"{where}.resources.requests")
    _refuse_unknown(limits, {"cpu", "memory"}, f"{where}.resources.limits")
    _refuse_unknown(requests, {"cpu", "memory"}, f"{where}.resources.requests")
    options: list[str] = []
    if "cpu" in limits:
        cpus = parse_quantity(limits["cpu"], f"{where}.resources.limits.cpu")
        options += ["--cpus", format(cpus.normalize(), "f")]
    if "memory" in limits:
        memory = str(_bytes(limits["memory"], f"{where}.resources.limits.memory"))
        options += ["--memory", memory, "--memory-swap", memory]
    if "cpu" in requests:
        cpu = parse_quantity(requests["cpu"], f"{where}.resources.requests.cpu")
        options += ["--cpu-shares", str(max(2, math.floor(cpu * 1024)))]
    if "memory" in requests:
        notes[f"{where}.resources.requests.memory"] = "scheduling only: no runtime effect"
    return options


# --- volumes ----------------------------------------------------------------------------------


def _volumes(
    pod: Mapping[str, Any],
    spec: Mapping[str, Any],
    where: str,
    pod_where: str,
    volume_dirs: Mapping[str, str],
) -> list[str]:
    volumes = {}
    for i, volume in enumerate(pod.get("volumes", [])):
        v = _mapping(volume, f"{pod_where}.volumes[{i}]")
        volumes[str(v.get("name"))] = v
    options: list[str] = []
    seen: set[str] = set()
    for i, mount in enumerate(spec.get("volumeMounts", [])):
        m = _mapping(mount, f"{where}.volumeMounts[{i}]")
        at = f"{where}.volumeMounts[{m.get('name', i)}]"
        _refuse_unknown(m, _MOUNT_FIELDS, at)
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
            empty = _mapping(volume["emptyDir"] or {}, f"{vwhere}.emptyDir")
            _refuse_unknown(empty, {"sizeLimit", "medium"}, f"{vwhere}.emptyDir")
            if empty.get("medium", "") not in ("", "Memory"):
                raise ManifestTranslationError(f"{vwhere}.emptyDir.medium: {empty['medium']!r}")
            if m.get("readOnly"):
                raise ManifestTranslationError(f"{at}.readOnly: a read-only emptyDir")
            tmpfs = f"{path}:rw"
            if "sizeLimit" in empty:
                tmpfs += f",size={_bytes(empty['sizeLimit'], f'{vwhere}.emptyDir.sizeLimit')}"
            options += ["--tmpfs", tmpfs]
        elif kinds in (["configMap"], ["secret"]):
            kind = kinds[0]
            ref = _mapping(volume[kind], f"{vwhere}.{kind}")
            key = "name" if kind == "configMap" else "secretName"
            _refuse_unknown(ref, {key}, f"{vwhere}.{kind}")
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


# --- environment ------------------------------------------------------------------------------


def _env(
    spec: Mapping[str, Any],
    where: str,
    secrets: Mapping[str, Mapping[str, str]],
    config_maps: Mapping[str, Mapping[str, str]],
) -> dict[str, str]:
    env: dict[str, str] = {}
    for i, entry in enumerate(spec.get("env", [])):
        e = _mapping(entry, f"{where}.env[{i}]")
        name = e.get("name")
        at = f"{where}.env[{name or i}]"
        if not isinstance(name, str) or not name:
            raise ManifestTranslationError(f"{at}.name: required")
        _refuse_unknown(e, {"name", "value", "valueFrom"}, at)
        if "valueFrom" not in e:
            value = str(e.get("value", ""))
            _no_expansion(value, f"{at}.value")
            env.pop(name, None)  # a later duplicate wins, in Kubernetes' order
            env[name] = value
            continue
        if "value" in e:
            raise ManifestTranslationError(f"{at}: both value and valueFrom")
        source = _mapping(e["valueFrom"], f"{at}.valueFrom")
        _refuse_unknown(source, {"secretKeyRef", "configMapKeyRef"}, f"{at}.valueFrom")
        if len(source) != 1:
            raise ManifestTranslationError(f"{at}.valueFrom: exactly one source")
        kind, ref = next(iter(source.items()))
        ref = _mapping(ref, f"{at}.valueFrom.{kind}")
        _refuse_unknown(ref, {"name", "key", "optional"}, f"{at}.valueFrom.{kind}")
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


# --- ports and probes -------------------------------------------------------------------------


def _ports(spec: Mapping[str, Any], where: str) -> dict[str, int]:
    ports: dict[str, int] = {}
    for i, entry in enumerate(spec.get("ports", [])):
        p = _mapping(entry, f"{where}.ports[{i}]")
        at = f"{where}.ports[{p.get('name', i)}]"
        _refuse_unknown(p, {"containerPort", "name", "protocol"}, at)
        if p.get("protocol", "TCP") != "TCP":
            raise ManifestTranslationError(f"{at}.protocol: only TCP is translated")
        number = int(p["containerPort"])
        ports[str(p.get("name", number))] = number
    return ports


def _probe(
    spec: Mapping[str, Any], key: str, kind: str, ports: Mapping[str, int], where: str
) -> HttpProbe | None:
    if key not in spec:
        return None
    at = f"{where}.{key}"
    probe = _mapping(spec[key], at)
    _refuse_unknown(probe, _PROBE_FIELDS, at)
    if "httpGet" not in probe:
        raise ManifestTranslationError(f"{at}: only httpGet probes are translated")
    get = _mapping(probe["httpGet"], f"{at}.httpGet")
    _refuse_unknown(get, _HTTP_GET_FIELDS, f"{at}.httpGet")
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
