"""The GitOps side of a rollout decision: the kustomize overlays that put the decided stage on a
cluster, written where a platform team commits them, and (with ``--apply``) applied.

Per model, under the GitOps directory:

* ``serving/``: the namespace's serving overlay (``production``, or ``canary`` with the
  current step's ``canaryTrafficPercent``), rendered by ``hmlops deploy render``;
* ``shadow/``: the shadow add-on while the candidate is in shadow or silent (the candidate
  scores copies of the champion's requests; its answers reach no one). Removed when the
  rollout leaves silent or rolls back.

A change is rendered into a staging directory first and swapped in only when everything
succeeded (including ``kubectl apply`` with ``--apply``), so a failed decision leaves the
committed overlays as they were.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hospital_mlops.deploy.overlay import DEFAULT_IMAGE, DEFAULT_NAMESPACE, render_overlay
from hospital_mlops.deploy.overlay import Stage as DeployStage
from hospital_mlops.rollout.state import Phase

SERVING = "serving"
SHADOW = "shadow"


class ApplyError(RuntimeError):
    """``kubectl`` could not apply the change; nothing was changed locally."""


@dataclass(frozen=True)
class Target:
    """What the cluster should run after a decision."""

    phase: Phase
    candidate_version: int
    champion_version: int | None
    canary_percent: int | None = None


@dataclass
class Change:
    renders: dict[str, tuple[DeployStage, int, int | None]] = field(default_factory=dict)
    removals: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.renders and not self.removals


def change_for(target: Target, previous: Phase | None) -> Change:
    """Which overlays to render (directory → deploy stage, version, canary %) and remove."""
    change = Change()
    if target.phase == "shadow":
        change.renders[SHADOW] = ("shadow", target.candidate_version, None)
    elif target.phase == "canary":
        change.renders[SERVING] = ("canary", target.candidate_version, target.canary_percent)
        change.removals.append(SHADOW)
    elif target.phase == "full":
        change.renders[SERVING] = ("production", target.candidate_version, None)
        change.removals.append(SHADOW)
    elif target.phase == "rolled_back":
        if previous in ("canary", "full") and target.champion_version is not None:
            change.renders[SERVING] = ("production", target.champion_version, None)
        change.removals.append(SHADOW)
    # silent: the shadow add-on already does it; the stage differs in its gates, not manifests
    return change


def require_kubeconfig() -> list[str]:
    """The kubeconfig files ``--apply`` will use; refuses before anything is written."""
    configured = os.environ.get("KUBECONFIG", "")
    paths = [p for p in configured.split(os.pathsep) if p]
    if not paths:
        raise ApplyError("--apply needs KUBECONFIG naming the cluster's kubeconfig file")
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise ApplyError(f"--apply: KUBECONFIG names missing files: {', '.join(missing)}")
    if shutil.which("kubectl") is None:
        raise ApplyError("--apply needs kubectl on PATH")
    return paths


def _kubectl(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        ["kubectl", *args], input=stdin, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise ApplyError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


def inference_services(directory: Path) -> list[dict[str, Any]]:
    """The InferenceServices an overlay renders: all the controller may touch. The rest of
    an overlay (policies, triggers, the detector) reaches the cluster through GitOps review, and
    the controller's Role (kustomize/rbac/rollout-controller) could not apply it anyway."""
    docs = yaml.safe_load_all(_kubectl("kustomize", str(directory)))
    return [d for d in docs if d and d.get("kind") == "InferenceService"]


def _apply(directory: Path) -> None:
    services = inference_services(directory)
    if not services:
        raise ApplyError(
            f"{directory} renders no InferenceService: nothing the controller may apply"
        )
    _kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(services, sort_keys=False))


def _delete(directory: Path) -> None:
    for isvc in inference_services(directory):
        meta = isvc["metadata"]
        _kubectl("delete", "inferenceservice", meta["name"], "-n", meta["namespace"],
                 "--ignore-not-found=true")  # fmt: skip


@dataclass(frozen=True)
class Written:
    patch_path: str | None  # the kustomization a platform team commits (None: no change)
    removed: tuple[str, ...]
    applied: bool


def write_change(
    root: Path,
    model: str,
    change: Change,
    *,
    apply: bool,
    image: str = DEFAULT_IMAGE,
    namespace: str = DEFAULT_NAMESPACE,
    allow_unpinned_image: bool = False,
) -> Written:
    """Render ``change`` under ``root/model``; with ``apply``, ``kubectl apply`` the renders'
    InferenceServices and delete the removals'. Swapped in only when all of that succeeded."""
    base = root / model
    removals = [name for name in change.removals if (base / name).is_dir()]
    if not change.renders and not removals:
        return Written(None, (), False)
    if apply:
        require_kubeconfig()
    staging = base / f".staging-{uuid.uuid4().hex[:12]}"
    try:
        for name, (stage, version, percent) in change.renders.items():
            render_overlay(
                model,
                version,
                stage,
                staging / name,
                image=image,
                namespace=namespace,
                canary_percent=percent,
                # what reaches a cluster is pinned by digest, whatever the caller allowed
                allow_unpinned_image=allow_unpinned_image and not apply,
            )
        if apply:
            for name in change.renders:
                _apply(staging / name)
            for name in removals:
                _delete(base / name)
        for name in change.renders:
            target = base / name
            old = base / f".old-{name}-{uuid.uuid4().hex[:8]}"
            if target.exists():
                os.replace(target, old)
            os.replace(staging / name, target)
            shutil.rmtree(old, ignore_errors=True)
        for name in removals:
            shutil.rmtree(base / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    patch = next(iter(change.renders), None)
    return Written(
        str(base / patch / "kustomization.yaml") if patch else None,
        tuple(str(base / name) for name in removals),
        apply,
    )
