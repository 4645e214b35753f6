"""Render a kustomize overlay that deploys one registered model version at one rollout stage.

The first use case's model is rendered into the namespace's stage overlays (kustomize/overlays);
every other into its own objects (kustomize/use-cases/<served name>/model; served_objects.py),
so a render never puts one model into another's objects.

Pure file writing: no cluster, no registry. The output directory is self-contained (a copy of
``kustomize`` plus a ``kustomization.yaml`` on top), so it can be reviewed as a whole,
committed to a GitOps repository, and applied with ``kubectl apply -k DIR`` long after the
base here has moved on. What the top kustomization adds to the stage overlay:

* every ``--model`` argument pinned to ``NAME@VERSION`` (a registry alias can move under a
  running service; a version cannot),
* the image and the namespace (the canary and production stages take the image by digest only,
  unless a dry run says otherwise), including the two strings that embed the
  namespace (the explainer's predictor host and the logger's Broker URL),
* ``hospital-mlops/model`` and ``hospital-mlops/model-version`` labels on every object.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from hospital_mlops.deploy.served_objects import (
    BoundUseCase,
    ServedObjects,
    UnknownDeployedModel,
    bound_use_cases,
    served_objects,
    shadow_trigger,
)
from hospital_mlops.paths import project_root

Stage = Literal["shadow", "canary", "production"]
STAGES: tuple[Stage, ...] = get_args(Stage)
# The stages whose answers reach clinicians: their image must be pinned by digest, because a tag
# can be pushed again with other code after the release was reviewed.
PINNED_STAGES: tuple[Stage, ...] = ("canary", "production")
UNPINNED_WARNING = (
    "# WARNING: the image is pinned by tag only (--allow-unpinned-image): a dry run, not for a "
    "cluster.\n"
)

DEFAULT_IMAGE = "registry.hospital.example/hospital-mlops/serving:0.1.0"
DEFAULT_NAMESPACE = "hospital-mlops"

# Names the manifests under kustomize use; tests check that the two agree.
BASE_IMAGE = "hospital-mlops-serving"
SERVICE = "readmission"  # the InferenceService clients call
SHADOW_SERVICE = f"{SERVICE}-shadow"
DETECTOR = "readmission-drift-detector"
CDS = "readmission-cds"
BROKER = "hmlops-inference-events"
CDS_ACCOUNT = "cds-hooks"
PREDICTOR_CALLERS = "predictor-callers"  # kustomize/mesh's AuthorizationPolicy
PORT = 8080

HEADER = "# Rendered by `hmlops deploy render`"
# The shadow overlay's edits (no explainer, no logger, cluster-local, its own prediction log),
# which a further use case's shadow render applies to its own InferenceService.
SHADOW_EDITS = "kustomize/overlays/shadow/shadow.yaml"
SHADOW_TRIGGER = "shadow-trigger.yaml"
MODEL_LABEL = "hospital-mlops/model"
VERSION_LABEL = "hospital-mlops/model-version"

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# registry[:port]/path/name, then :tag and/or @sha256:digest (the OCI reference grammar, lowercase)
_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[a-f0-9]{64}))?$"
)


class DeployRenderError(ValueError):
    """A bad argument or output directory; the message names the field and the rule."""


def kustomize_root() -> Path:
    return project_root() / "kustomize"


def model_ref(model: str, version: int) -> str:
    return f"{model}@{version}"


def predictor_args(ref: str) -> list[str]:
    return ["serve-one", "predictor", "--model", ref, "--port", str(PORT), "--bind", "0.0.0.0"]


def explainer_args(ref: str, predictor: str) -> list[str]:
    # ``--predictor_host`` in KServe's spelling: KServe appends its own unless one starts so.
    return [
        "serve-one",
        "explainer",
        "--model",
        ref,
        "--predictor_host",
        predictor,
        "--port",
        str(PORT),
        "--bind",
        "0.0.0.0",
    ]


def detector_args(ref: str) -> list[str]:
    return ["serve-one", "detector", "--model", ref, "--port", str(PORT), "--bind", "0.0.0.0"]


def cds_args(namespace: str, bound: Sequence[BoundUseCase] = ()) -> list[str]:
    """The CDS service's command: the first use case's predictor, then each further use case's
    (``--use-case-predictor ID=URL``, as its Component appends it), all in ``namespace``."""
    url = f"http://{predictor_host(SERVICE, namespace)}"
    args = ["cds", "serve", "--port", str(PORT), "--bind", "0.0.0.0", "--predictor-url", url]
    for case in bound:
        host = predictor_host(case.service, namespace)
        args += ["--use-case-predictor", f"{case.use_case}=http://{host}"]
    return args


def predictor_callers(namespace: str, bound: Sequence[BoundUseCase] = ()) -> list[str]:
    """The mesh identities allowed to call the predictors (kustomize/mesh's predictor-callers,
    plus each bound use case's explainer as its Component appends it), in ``namespace``."""
    accounts = [CDS_ACCOUNT, f"{SERVICE}-explainer", *(f"{c.service}-explainer" for c in bound)]
    return [f"cluster.local/ns/{namespace}/sa/{account}" for account in accounts]


def predictor_host(service: str, namespace: str) -> str:
    """Where KServe's explainer reaches the predictor of ``service`` (Knative, port 80)."""
    return f"{service}-predictor.{namespace}"


def logger_url(namespace: str, broker: str = BROKER) -> str:
    """The multi-tenant channel Broker's ingress address for ``broker`` in ``namespace``."""
    return f"http://broker-ingress.knative-eventing.svc.cluster.local/{namespace}/{broker}"


def _check_dns_label(field: str, value: object) -> str:
    if not isinstance(value, str) or not _DNS1123_LABEL.match(value):
        raise DeployRenderError(
            f"{field} {value!r}: must be a DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)"
        )
    return value


def _served_objects(model: str) -> ServedObjects:
    """The first use case's model is rendered into the namespace's stage overlays; any other
    into its own objects (kustomize/use-cases/<served name>/model), never into the first's."""
    try:
        return served_objects(model, kustomize_root(), first_service=SERVICE)
    except UnknownDeployedModel as err:
        raise DeployRenderError(str(err)) from None


def _check_version(version: object) -> int:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DeployRenderError(f"version {version!r}: must be a registry version number >= 1")
    return version


def _check_stage(stage: object) -> Stage:
    if stage not in STAGES:
        raise DeployRenderError(f"stage {stage!r}: must be one of {', '.join(STAGES)}")
    return stage


def _check_canary_percent(stage: Stage, percent: object) -> None:
    if percent is None:
        return
    if stage != "canary":
        raise DeployRenderError(f"canary_percent {percent!r}: only the canary stage splits traffic")
    if isinstance(percent, bool) or not isinstance(percent, int) or not 0 < percent < 100:
        raise DeployRenderError(f"canary_percent {percent!r}: must be a whole number in 1..99")


def parse_image(image: str) -> dict[str, str]:
    """``name[:tag][@sha256:…]`` → a kustomize ``images`` entry for the base's placeholder.

    A tag or a digest is required and ``latest`` is refused: the image must say which code runs.
    """
    match = _IMAGE.match(image) if isinstance(image, str) else None
    if not match:
        raise DeployRenderError(
            f"image {image!r}: must be an image reference such as "
            "registry.example/hospital-mlops/serving:0.1.0 or …/serving@sha256:<64 hex>"
        )
    tag, digest = match["tag"], match["digest"]
    if not tag and not digest:
        raise DeployRenderError(f"image {image!r}: needs a tag or a digest (which code runs?)")
    if tag == "latest" and not digest:
        raise DeployRenderError(f"image {image!r}: 'latest' names no particular build")
    entry = {"name": BASE_IMAGE, "newName": match["name"]}
    entry.update({"digest": digest} if digest else {"newTag": tag})
    return entry


def check_image_pin(image: str, stage: str, *, allow_unpinned: bool = False) -> bool:
    """Refuse a tag-only image for a stage whose answers reach clinicians; return whether the
    image is pinned by digest. ``allow_unpinned`` is for dry runs that never reach a cluster."""
    pinned = "digest" in parse_image(image)
    if stage in PINNED_STAGES and not pinned and not allow_unpinned:
        raise DeployRenderError(
            f"image {image!r}: the {stage} stage serves clinicians, so its image must be pinned "
            "by digest (registry/…/serving@sha256:<64 hex>, as the image build printed it); a "
            "tag can be pushed again with other code. For a dry run that will never reach a "
            "cluster, pass --allow-unpinned-image"
        )
    return pinned


def _check_out_dir(out_dir: Path, source: Path) -> None:
    resolved = out_dir.resolve()
    if resolved == source.resolve() or source.resolve() in resolved.parents:
        raise DeployRenderError(f"out_dir {out_dir}: must be outside {source}")
    if out_dir.exists() and not out_dir.is_dir():
        raise DeployRenderError(f"out_dir {out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        top = out_dir / "kustomization.yaml"
        if not (top.is_file() and top.read_text().startswith(HEADER)):
            raise DeployRenderError(
                f"out_dir {out_dir}: not empty and not an earlier render; refusing to overwrite"
            )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the inline JSON6902 patches) as ``|`` blocks a reviewer can read."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, width=1000)


def _patch(
    target: dict[str, str], replacements: dict[str, Any], op: str = "replace"
) -> dict[str, Any]:
    """A kustomize patch entry: JSON6902 ``op`` (replace) of each path with its value."""
    ops = [{"op": op, "path": path, "value": value} for path, value in replacements.items()]
    return {"target": target, "patch": _dump(ops)}


def _stage_patches(
    stage: Stage,
    ref: str,
    namespace: str,
    objects: ServedObjects,
    canary_percent: int | None = None,
    bound: Sequence[BoundUseCase] = (),
) -> list[dict[str, Any]]:
    isvc = {"group": "serving.kserve.io", "version": "v1beta1", "kind": "InferenceService"}
    if stage == "shadow":
        # The add-on holds the shadow InferenceService only; the champion's stack is untouched.
        if objects.owns_the_namespace:
            # overlays/shadow already renamed it
            return [
                _patch(
                    {**isvc, "name": objects.shadow_service},
                    {"/spec/predictor/containers/0/args": predictor_args(ref)},
                )
            ]
        # Renamed by this kustomization's own suffix, so targeted by the name it had: first
        # overlays/shadow's generic edits, then this model's CloudEvent source and pin.
        target = {**isvc, "name": objects.service}
        return [
            {"path": SHADOW_EDITS, "target": target},
            {
                "target": target,
                "patch": _dump(
                    [
                        # by index in SHADOW_EDITS' env list; the test op fails the build if it
                        # moves, rather than renaming another variable
                        {"op": "test", "path": "/spec/predictor/containers/0/env/3/name",
                         "value": "CE_SOURCE"},
                        {"op": "replace", "path": "/spec/predictor/containers/0/env/3/value",
                         "value": f"hospital-mlops/{objects.shadow_service}"},
                        {"op": "replace", "path": "/spec/predictor/containers/0/args",
                         "value": predictor_args(ref)},
                    ]
                ),
            },
        ]  # fmt: skip
    detector = {"group": "apps", "version": "v1", "kind": "Deployment", "name": objects.detector}
    replacements: dict[str, Any] = {
        "/spec/predictor/containers/0/args": predictor_args(ref),
        "/spec/explainer/containers/0/args": explainer_args(
            ref, predictor_host(objects.service, namespace)
        ),
        "/spec/predictor/logger/url": logger_url(namespace),
    }
    patches = [_patch({**isvc, "name": objects.service}, replacements)]
    if canary_percent is not None:
        # the rollout's current canary step (the canary overlay's own value is the first step;
        # a further use case's objects have none, hence add, which also replaces)
        patches.append(
            _patch(
                {**isvc, "name": objects.service},
                {
                    "/spec/predictor/canaryTrafficPercent": canary_percent,
                    "/spec/explainer/canaryTrafficPercent": canary_percent,
                },
                op="add",
            )
        )
    # The detector's drift reference is the pinned version's training data.
    patches.append(_patch(detector, {"/spec/template/spec/containers/0/args": detector_args(ref)}))
    if objects.owns_the_namespace:
        # The CDS service calls whichever version the InferenceService serves, in this namespace.
        patches.append(
            _patch(
                {**detector, "name": CDS},
                {"/spec/template/spec/containers/0/args": cds_args(namespace, bound)},
            )
        )
        # The mesh names its callers by identity, which carries the namespace.
        patches.append(
            _patch(
                {"group": "security.istio.io", "version": "v1", "kind": "AuthorizationPolicy",
                 "name": PREDICTOR_CALLERS},
                {"/spec/rules/0/from/0/source/principals": predictor_callers(namespace, bound)},
            )
        )  # fmt: skip
    return patches


def _resources(
    stage: Stage, objects: ServedObjects, bound: Sequence[BoundUseCase]
) -> dict[str, Any]:
    """What a render builds on: the namespace's stage overlay for the first use case's model,
    with every further use case's bindings (its CDS service entry, its mesh caller) when the
    stage holds the namespace's shared objects; for another model, its own objects, with the
    stage's label (and, for shadow, the shadow edits)."""
    if objects.model_dir is None:
        if stage == "shadow" or not bound:
            return {"resources": [f"kustomize/overlays/{stage}"]}
        return {
            "resources": [f"kustomize/overlays/{stage}"],
            "components": [f"kustomize/{case.bindings_dir}" for case in bound],
        }
    stage_label = f"kustomize/overlays/{stage}/stage-label.yaml"
    if stage == "shadow":
        return {
            "nameSuffix": "-shadow",
            "resources": [f"kustomize/{objects.model_dir}/inferenceservice", SHADOW_TRIGGER],
            "transformers": [stage_label],
        }
    return {"resources": [f"kustomize/{objects.model_dir}"], "transformers": [stage_label]}


def _kustomization(
    objects: ServedObjects,
    version: int,
    stage: Stage,
    image: str,
    namespace: str,
    provenance: str,
    canary_percent: int | None = None,
    bound: Sequence[BoundUseCase] = (),
) -> str:
    model = objects.model
    ref = model_ref(model, version)
    body: dict[str, Any] = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "namespace": namespace,
        **_resources(stage, objects, bound),
        "images": [parse_image(image)],
        # Not on selectors: a selector that changes with every version orphans the old pods.
        "labels": [
            {
                "pairs": {MODEL_LABEL: model, VERSION_LABEL: str(version)},
                "includeSelectors": False,
            }
        ],
        "patches": _stage_patches(stage, ref, namespace, objects, canary_percent, bound),
    }
    traffic = "" if canary_percent is None else f" ({canary_percent}% of traffic)"
    if objects.owns_the_namespace:
        apply_hint = (
            "next to the running production overlay; delete it to end the shadow"
            if stage == "shadow"
            else "it replaces the namespace's current production or canary"
        )
    else:
        apply_hint = (
            f"next to {model}'s running production stage; delete it to end the shadow"
            if stage == "shadow"
            else f"it replaces {model}'s own objects ({objects.service}, {objects.detector} "
            "and their Triggers) and nothing else:\n# the namespace's shared objects and its "
            "CDS binding come from the namespace's overlay (kustomize/overlays/all-models)"
        )
    header = (
        f"{HEADER}: {ref} at stage {stage!r}{traffic} in namespace {namespace!r}.\n"
        f"# From hospital-mlops {provenance}. Apply with `kubectl apply -k <this dir>`, "
        f"{apply_hint}.\n"
    )
    if stage in PINNED_STAGES and "digest" not in parse_image(image):
        header += UNPINNED_WARNING
    return header + _dump(body)


def _provenance() -> str:
    from hospital_mlops.data.lineage import code_version

    version = code_version()
    return f"{version['git_sha']}{' (dirty)' if version['dirty'] else ''}"


def render_overlay(
    model: str,
    version: int,
    stage: Stage,
    out_dir: Path,
    *,
    image: str = DEFAULT_IMAGE,
    namespace: str = DEFAULT_NAMESPACE,
    canary_percent: int | None = None,
    allow_unpinned_image: bool = False,
) -> Path:
    """Write ``out_dir/kustomization.yaml`` (plus a copy of the kustomize tree) that deploys
    ``model`` version ``version`` at ``stage``; return ``out_dir``.

    Raises ``DeployRenderError`` naming the field for a bad model name, version, stage, image,
    namespace, canary percentage or output directory, and for a canary or production image
    that is not pinned by digest unless ``allow_unpinned_image`` (the render then says so). An
    earlier render in ``out_dir`` is replaced; anything else there is never overwritten.
    """
    _check_dns_label("model", model)
    objects = _served_objects(model)
    _check_version(version)
    _check_stage(stage)
    _check_dns_label("namespace", namespace)
    _check_canary_percent(stage, canary_percent)
    check_image_pin(image, stage, allow_unpinned=allow_unpinned_image)
    source = kustomize_root()
    if not (source / "overlays" / stage / "kustomization.yaml").is_file():
        raise DeployRenderError(
            f"no kustomize overlay for {stage!r} under {source}: render from a hospital-mlops "
            "checkout (or set HMLOPS_HOME to one)"
        )
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, source)
    bound = bound_use_cases(source) if objects.owns_the_namespace else []
    text = _kustomization(
        objects, version, stage, image, namespace, _provenance(), canary_percent, bound
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    copy = out_dir / "kustomize"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    trigger = out_dir / SHADOW_TRIGGER
    if stage == "shadow" and not objects.owns_the_namespace:
        trigger.write_text(
            f"{HEADER}: the Trigger feeding {objects.shadow_service} (overlays/shadow/trigger.yaml "
            f"for {objects.service}).\n" + _dump(shadow_trigger(objects.service, BROKER))
        )
    elif trigger.exists():
        trigger.unlink()  # an earlier render's, of another stage
    (out_dir / "kustomization.yaml").write_text(text)
    return out_dir
