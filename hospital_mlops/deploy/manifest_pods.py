"""Where a translated container comes from: the pods in a rendered overlay's documents.

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
* ``serving_pods(docs)``: the four serving pods of a rendered overlay, by component.

Each is a ``PodSource`` that ``manifest_podman_run.translate`` turns into a ``podman run``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hospital_mlops.deploy.manifest_refusals import (
    ManifestTranslationError,
    refuse_unknown,
    required_mapping,
)

KSERVE_HTTP_PORT = "8080"  # constants.InferenceServiceDefaultHttpPort


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


def deployment_pod(deployment: Mapping[str, Any]) -> PodSource:
    """The pod a Deployment runs."""
    if deployment.get("kind") != "Deployment":
        raise ManifestTranslationError(f"kind: expected Deployment, not {deployment.get('kind')}")
    name = deployment.get("metadata", {}).get("name", "?")
    where = f"Deployment/{name}"
    spec = required_mapping(deployment.get("spec"), f"{where} spec")
    refuse_unknown(spec, {*_DEPLOYMENT_FIELDS, "template"}, f"{where} spec")
    template = required_mapping(spec.get("template"), f"{where} spec.template")
    refuse_unknown(template, {"metadata", "spec"}, f"{where} spec.template")
    metadata = required_mapping(template.get("metadata", {}), f"{where} spec.template.metadata")
    refuse_unknown(metadata, _TEMPLATE_META, f"{where} spec.template.metadata")
    notes = {f"{where} spec.{k}": why for k, why in _DEPLOYMENT_FIELDS.items() if k in spec}
    for key in metadata:
        notes[f"{where} spec.template.metadata.{key}"] = "pod metadata: no effect on the container"
    pod = required_mapping(template.get("spec"), f"{where} spec.template.spec")
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
    spec = required_mapping(isvc.get("spec", {}).get(component), where)
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
