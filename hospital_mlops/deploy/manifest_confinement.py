"""What confines a translated container: its security context and its resources.

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
  ``privileged: true`` and any other seccomp profile are refused.
* ``resources.limits.cpu`` → ``--cpus`` (the CFS quota the kubelet sets);
  ``resources.limits.memory`` → ``--memory`` and ``--memory-swap`` of the same size (no swap,
  as on a node); ``resources.requests.cpu`` → ``--cpu-shares`` (millicores × 1024 / 1000, the
  kubelet's cpu.shares). ``resources.requests.memory`` only schedules: recorded.

Kubernetes resource quantities (``250m``, ``1Gi``, ``1e3``) are read here too
(``parse_quantity``, ``quantity_bytes``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from hospital_mlops.deploy.manifest_refusals import (
    ManifestTranslationError,
    refuse_unknown,
    required_mapping,
    string_list,
)

_POD_SECURITY = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "fsGroup", "supplementalGroups", "seccompProfile",
}  # fmt: skip
_CONTAINER_SECURITY = {
    "runAsUser", "runAsGroup", "runAsNonRoot", "readOnlyRootFilesystem",
    "allowPrivilegeEscalation", "capabilities", "privileged", "seccompProfile",
}  # fmt: skip


def security_options(
    pod: Mapping[str, Any], spec: Mapping[str, Any], where: str, pod_where: str
) -> list[str]:
    """``--user``, ``--group-add``, ``--read-only``, ``--security-opt`` and capabilities from
    the pod's and the container's security contexts."""
    pod_sc = required_mapping(pod.get("securityContext", {}), f"{pod_where}.securityContext")
    sc = required_mapping(spec.get("securityContext", {}), f"{where}.securityContext")
    refuse_unknown(pod_sc, _POD_SECURITY, f"{pod_where}.securityContext")
    refuse_unknown(sc, _CONTAINER_SECURITY, f"{where}.securityContext")

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
    caps = required_mapping(sc.get("capabilities", {}), f"{where}.securityContext.capabilities")
    refuse_unknown(caps, {"drop", "add"}, f"{where}.securityContext.capabilities")
    for flag, key in (("--cap-drop", "drop"), ("--cap-add", "add")):
        for cap in string_list(caps.get(key, []), f"{where}.securityContext.capabilities.{key}"):
            options += [flag, cap]
    seccomp = pick("seccompProfile")
    if seccomp is not None:
        profile = required_mapping(seccomp, f"{where}.securityContext.seccompProfile")
        if dict(profile) != {"type": "RuntimeDefault"}:
            raise ManifestTranslationError(
                f"{where}.securityContext.seccompProfile: only RuntimeDefault (podman's default "
                f"profile) is translated, not {dict(profile)}"
            )
    return options


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


def quantity_bytes(value: Any, where: str) -> int:
    """A positive quantity as whole bytes (rounded up)."""
    amount = parse_quantity(value, where)
    if amount <= 0:
        raise ManifestTranslationError(f"{where}: {value!r} must be positive")
    return math.ceil(amount)


def resource_options(spec: Mapping[str, Any], where: str, notes: dict[str, str]) -> list[str]:
    """``--cpus``, ``--memory``/``--memory-swap`` and ``--cpu-shares`` from the limits and
    requests; a memory request is recorded in ``notes``."""
    resources = required_mapping(spec.get("resources", {}), f"{where}.resources")
    refuse_unknown(resources, {"limits", "requests"}, f"{where}.resources")
    limits = required_mapping(resources.get("limits", {}), f"{where}.resources.limits")
    requests = required_mapping(resources.get("requests", {}), f"{where}.resources.requests")
    refuse_unknown(limits, {"cpu", "memory"}, f"{where}.resources.limits")
    refuse_unknown(requests, {"cpu", "memory"}, f"{where}.resources.requests")
    options: list[str] = []
    if "cpu" in limits:
        cpus = parse_quantity(limits["cpu"], f"{where}.resources.limits.cpu")
        options += ["--cpus", format(cpus.normalize(), "f")]
    if "memory" in limits:
        memory = str(quantity_bytes(limits["memory"], f"{where}.resources.limits.memory"))
        options += ["--memory", memory, "--memory-swap", memory]
    if "cpu" in requests:
        cpu = parse_quantity(requests["cpu"], f"{where}.resources.requests.cpu")
        options += ["--cpu-shares", str(max(2, math.floor(cpu * 1024)))]
    if "memory" in requests:
        notes[f"{where}.resources.requests.memory"] = "scheduling only: no runtime effect"
    return options
