"""``render_overlay``: a self-contained kustomize directory that pins one registry version at one
stage, builds with ``kubectl kustomize``, validates, and refuses bad input naming the field."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from hospital_mlops.deploy import overlay as deploy
from hospital_mlops.deploy.overlay import DeployRenderError, render_overlay
from tests.unit.test_manifests import (
    build,
    component_pods,
    of_kind,
    one,
    validate_all,
    workload_pods,
)

MODEL = "readmission-30d"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"registry.hospital.example:5000/hospital-mlops/serving@{DIGEST}"
NAMESPACE = "clinical-ml"


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Version 7 at every stage, in another namespace, with an image digest."""
    root = tmp_path_factory.mktemp("rendered")
    return {
        stage: build(
            render_overlay(MODEL, 7, stage, root / stage, image=IMAGE, namespace=NAMESPACE)
        )
        for stage in deploy.STAGES
    }


def _containers(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for pod in workload_pods(docs) for c in pod["spec"]["containers"]]


@pytest.mark.parametrize("stage", deploy.STAGES)
def test_rendered_overlay_pins_version_image_and_namespace(
    rendered: dict[str, list[dict[str, Any]]], stage: str
) -> None:
    docs = rendered[stage]
    validate_all(docs)
    containers = _containers(docs)
    assert containers
    for c in containers:
        model_args = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--model"]
        # no alias survives; the CDS service names no model (it calls the served predictor)
        expected = [] if c["args"][:2] == ["cds", "serve"] else [f"{MODEL}@7"]
        assert model_args == expected, c["args"]
        assert c["image"] == IMAGE
    for doc in docs:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        labels = doc["metadata"]["labels"]
        assert labels[deploy.MODEL_LABEL] == MODEL and labels[deploy.VERSION_LABEL] == "7"


@pytest.mark.parametrize("stage", ["production", "canary"])
def test_namespace_reaches_the_strings_that_embed_it(
    rendered: dict[str, list[dict[str, Any]]], stage: str
) -> None:
    isvc = one(rendered[stage], "InferenceService", deploy.SERVICE)
    assert isvc["spec"]["predictor"]["logger"]["url"] == deploy.logger_url(NAMESPACE)
    args = isvc["spec"]["explainer"]["containers"][0]["args"]
    host = args[args.index("--predictor_host") + 1]
    assert host == f"{deploy.SERVICE}-predictor.{NAMESPACE}"
    cds = one(rendered[stage], "Deployment", deploy.CDS)["spec"]["template"]["spec"]
    args = cds["containers"][0]["args"]
    assert args[args.index("--predictor-url") + 1] == f"http://{host}"
    detector = one(rendered[stage], "Deployment", deploy.DETECTOR)
    assert detector["spec"]["template"]["spec"]["containers"][0]["args"] == deploy.detector_args(
        f"{MODEL}@7"
    )


@pytest.mark.parametrize("stage", ["production", "canary"])
def test_the_namespace_stage_binds_every_further_use_case_in_its_namespace(
    rendered: dict[str, list[dict[str, Any]]], stage: str
) -> None:
    """A namespace run from rendered directories (readmission's stage plus each further model's
    own) still has the CDS service serve every use case's hook and the mesh let each explainer
    call its predictor: in the render's namespace, not the base's."""
    docs = rendered[stage]
    args = one(docs, "Deployment", deploy.CDS)["spec"]["template"]["spec"]["containers"][0]["args"]
    bound = args[args.index("--use-case-predictor") + 1]
    assert bound == f"post_acute_at_admission=http://post-acute-predictor.{NAMESPACE}"
    assert args.count("--use-case-predictor") == 1  # the Component's append, replaced whole
    callers = one(docs, "AuthorizationPolicy", deploy.PREDICTOR_CALLERS)
    principals = callers["spec"]["rules"][0]["from"][0]["source"]["principals"]
    assert principals == [
        f"cluster.local/ns/{NAMESPACE}/sa/{account}"
        for account in ("cds-hooks", "readmission-explainer", "post-acute-explainer")
    ]
    # its bindings only: the post-acute model's own objects come from its own render
    assert not [d for d in docs if d["metadata"]["name"].startswith("post-acute")]


def test_labels_never_reach_selectors(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """A selector that changed with every version would orphan the running pods."""
    docs = rendered["production"]
    deployment = one(docs, "Deployment", deploy.DETECTOR)
    assert deploy.VERSION_LABEL not in deployment["spec"]["selector"]["matchLabels"]
    assert deploy.VERSION_LABEL not in one(docs, "Service", deploy.DETECTOR)["spec"]["selector"]
    for policy in of_kind(docs, "NetworkPolicy"):
        assert deploy.VERSION_LABEL not in str(policy["spec"]), policy["metadata"]["name"]


def test_promoting_a_canary_changes_only_its_traffic_split(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """canary(N) → production(N) must leave the revision that already runs: same labels,
    annotations and pod specs, only canaryTrafficPercent gone."""
    canary = one(rendered["canary"], "InferenceService", deploy.SERVICE)
    production = one(rendered["production"], "InferenceService", deploy.SERVICE)
    assert canary["metadata"]["labels"] == production["metadata"]["labels"]
    assert canary["metadata"]["annotations"] == production["metadata"]["annotations"]
    assert [pod["spec"] for pod in component_pods(canary)] == [
        pod["spec"] for pod in component_pods(production)
    ]
    for component in ("predictor", "explainer"):
        c, p = dict(canary["spec"][component]), dict(production["spec"][component])
        assert c.pop("canaryTrafficPercent") == 10
        assert c == p


def test_shadow_render_touches_only_the_shadow(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["shadow"]
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "Trigger"]
    shadow = one(docs, "InferenceService", deploy.SHADOW_SERVICE)
    assert shadow["spec"]["predictor"]["containers"][0]["args"] == deploy.predictor_args(
        f"{MODEL}@7"
    )
    (trigger,) = of_kind(docs, "Trigger")
    assert trigger["spec"]["filter"]["attributes"]["inferenceservicename"] == deploy.SERVICE


def test_render_is_deterministic_self_contained_and_replaceable(tmp_path: Path) -> None:
    first = render_overlay(MODEL, 3, "canary", tmp_path / "a", image=IMAGE)
    second = render_overlay(MODEL, 3, "canary", tmp_path / "b", image=IMAGE)
    text = (first / "kustomization.yaml").read_text()
    assert text == (second / "kustomization.yaml").read_text()
    assert text.startswith(deploy.HEADER) and f"{MODEL}@3" in text.splitlines()[0]
    # Moved elsewhere (a GitOps repository), it still builds, to the same objects.
    moved = shutil.copytree(first, tmp_path / "elsewhere" / "deep" / "canary")
    assert build(moved) == build(first)
    assert not list(moved.rglob("examples"))
    # A later render into the same directory replaces the earlier one.
    render_overlay(MODEL, 4, "production", first, image=IMAGE)
    body = yaml.safe_load((first / "kustomization.yaml").read_text())
    assert body["resources"] == ["kustomize/overlays/production"]
    assert body["labels"][0]["pairs"][deploy.VERSION_LABEL] == "4"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"stage": "staging"}, "stage"),
        ({"version": 0}, "version"),
        ({"version": -2}, "version"),
        ({"version": True}, "version"),
        ({"version": "3"}, "version"),
        ({"model": "Readmission-30d"}, "model"),
        ({"model": "readmission_30d"}, "model"),
        ({"model": "r" * 64}, "model"),
        ({"model": "-readmission"}, "model"),
        ({"namespace": "Clinical"}, "namespace"),
        ({"namespace": ""}, "namespace"),
        ({"image": "registry.example/serving"}, "image"),
        ({"image": "registry.example/serving:latest"}, "image"),
        ({"image": "Registry.example/Serving:1"}, "image"),
        ({"image": "serving@sha256:short"}, "image"),
        ({"image": "registry.example/serving:1.4"}, "image"),  # canary: a tag is not enough
    ],
)
def test_bad_input_is_refused_naming_the_field(
    tmp_path: Path, kwargs: dict[str, Any], field: str
) -> None:
    args: dict[str, Any] = {"model": MODEL, "version": 3, "stage": "canary", "image": IMAGE}
    args |= kwargs
    keyword = {k: args.pop(k) for k in ("image", "namespace") if k in args}
    with pytest.raises(DeployRenderError) as info:
        render_overlay(args["model"], args["version"], args["stage"], tmp_path / "out", **keyword)
    assert str(info.value).startswith(f"{field} ")
    assert not (tmp_path / "out").exists()


def test_images_with_a_tag_a_digest_or_both_are_accepted() -> None:
    assert deploy.parse_image("registry.example:5000/a/serving:0.1.0") == {
        "name": deploy.BASE_IMAGE,
        "newName": "registry.example:5000/a/serving",
        "newTag": "0.1.0",
    }
    both = deploy.parse_image(f"serving:0.1.0@{DIGEST}")
    assert both == {"name": deploy.BASE_IMAGE, "newName": "serving", "digest": DIGEST}


@pytest.mark.parametrize("stage", deploy.PINNED_STAGES)
def test_a_stage_that_reaches_clinicians_runs_an_image_pinned_by_digest(
    tmp_path: Path, stage: str
) -> None:
    tagged = "registry.hospital.example/hospital-mlops/serving:1.4"
    with pytest.raises(DeployRenderError, match=r"^image .*must be pinned by digest") as info:
        render_overlay(MODEL, 3, stage, tmp_path / "refused", image=tagged)
    assert "--allow-unpinned-image" in str(info.value)
    assert not (tmp_path / "refused").exists()
    # a dry run may opt out, and its render says so in its header
    dry = render_overlay(MODEL, 3, stage, tmp_path / "dry", image=tagged, allow_unpinned_image=True)
    text = (dry / "kustomization.yaml").read_text()
    assert deploy.UNPINNED_WARNING in text
    assert {c["image"] for c in _containers(build(dry))} == {tagged}
    pinned = render_overlay(MODEL, 3, stage, tmp_path / "pinned", image=IMAGE)
    assert deploy.UNPINNED_WARNING not in (pinned / "kustomization.yaml").read_text()
    assert {c["image"] for c in _containers(build(pinned))} == {IMAGE}


def test_the_shadow_stage_may_run_a_tagged_image(tmp_path: Path) -> None:
    """Its answers reach no one, so a release candidate can be shadowed before it is pushed
    by digest."""
    out = render_overlay(MODEL, 3, "shadow", tmp_path / "s", image=deploy.DEFAULT_IMAGE)
    assert deploy.UNPINNED_WARNING not in (out / "kustomization.yaml").read_text()


def test_output_directory_is_never_clobbered(tmp_path: Path) -> None:
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "kustomization.yaml").write_text("resources: [mine.yaml]\n")
    with pytest.raises(DeployRenderError, match=r"^out_dir .*refusing to overwrite"):
        render_overlay(MODEL, 3, "canary", foreign, image=IMAGE)
    assert (foreign / "kustomization.yaml").read_text() == "resources: [mine.yaml]\n"
    with pytest.raises(DeployRenderError, match=r"^out_dir .*must be outside"):
        render_overlay(MODEL, 3, "canary", deploy.kustomize_root() / "overlays" / "x", image=IMAGE)
    assert not (deploy.kustomize_root() / "overlays" / "x").exists()


# ------------------------------------------------------------------ a further use case's model

POST_ACUTE_MODEL = "post-acute-at-admission"
POST_ACUTE = "post-acute"


@pytest.fixture(scope="module")
def post_acute(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The post-acute model's version 4 at every stage (canary at its second step)."""
    root = tmp_path_factory.mktemp("post-acute")
    return {
        stage: build(
            render_overlay(
                POST_ACUTE_MODEL,
                4,
                stage,
                root / stage,
                image=IMAGE,
                namespace=NAMESPACE,
                canary_percent=50 if stage == "canary" else None,
            )
        )
        for stage in deploy.STAGES
    }


@pytest.mark.parametrize("stage", deploy.STAGES)
def test_a_further_use_cases_stage_holds_only_its_own_objects_pinned(
    post_acute: dict[str, list[dict[str, Any]]], stage: str
) -> None:
    """Rollout is per model: its render pins its own objects and never touches readmission's
    or the namespace's shared ones (the Broker, the CDS service, the policies)."""
    docs = post_acute[stage]
    validate_all(docs)
    namespace = build(deploy.kustomize_root() / "overlays" / "production")  # without post-acute
    readmission = {(d["kind"], d["metadata"]["name"]) for d in namespace}
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert names and not names & readmission
    assert all(name.startswith(POST_ACUTE) for _, name in names), names
    for c in _containers(docs):
        model_args = [c["args"][i + 1] for i, a in enumerate(c["args"]) if a == "--model"]
        assert model_args == [f"{POST_ACUTE_MODEL}@4"] and c["image"] == IMAGE
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]
        labels = doc["metadata"]["labels"]
        assert labels[deploy.MODEL_LABEL] == POST_ACUTE_MODEL
        assert labels[deploy.VERSION_LABEL] == "4"
        if doc["kind"] != "InferenceService":  # KServe would copy it into the pods
            assert labels["hospital-mlops/stage"] == stage


def test_a_further_use_cases_canary_splits_its_own_traffic(
    post_acute: dict[str, list[dict[str, Any]]],
) -> None:
    isvc = one(post_acute["canary"], "InferenceService", POST_ACUTE)
    assert isvc["spec"]["predictor"]["canaryTrafficPercent"] == 50
    assert isvc["spec"]["explainer"]["canaryTrafficPercent"] == 50
    assert isvc["spec"]["predictor"]["logger"]["url"] == deploy.logger_url(NAMESPACE)
    args = isvc["spec"]["explainer"]["containers"][0]["args"]
    assert args[args.index("--predictor_host") + 1] == f"{POST_ACUTE}-predictor.{NAMESPACE}"
    production = one(post_acute["production"], "InferenceService", POST_ACUTE)
    assert "canaryTrafficPercent" not in production["spec"]["predictor"]
    detector = one(post_acute["production"], "Deployment", f"{POST_ACUTE}-drift-detector")
    assert detector["spec"]["template"]["spec"]["containers"][0]["args"] == deploy.detector_args(
        f"{POST_ACUTE_MODEL}@4"
    )


def test_a_further_use_cases_shadow_is_readmissions_shadow_for_its_model(
    post_acute: dict[str, list[dict[str, Any]]], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    """The same shadow edits as overlays/shadow (no explainer, no logger, cluster-local, the
    shadow prediction log, a reply type no Trigger takes), its own names and CloudEvent source."""
    docs = post_acute["shadow"]
    assert sorted(d["kind"] for d in docs) == ["InferenceService", "Trigger"]
    shadow = one(docs, "InferenceService", f"{POST_ACUTE}-shadow")
    theirs = one(rendered["shadow"], "InferenceService", deploy.SHADOW_SERVICE)
    assert "explainer" not in shadow["spec"] and "logger" not in shadow["spec"]["predictor"]
    env = {e["name"]: e for e in shadow["spec"]["predictor"]["containers"][0]["env"]}
    their_env = {e["name"]: e for e in theirs["spec"]["predictor"]["containers"][0]["env"]}
    assert env.pop("CE_SOURCE")["value"] == f"hospital-mlops/{POST_ACUTE}-shadow"
    assert their_env.pop("CE_SOURCE")["value"] == f"hospital-mlops/{deploy.SHADOW_SERVICE}"
    assert env == their_env
    assert shadow["metadata"]["labels"]["networking.kserve.io/visibility"] == "cluster-local"
    [trigger] = of_kind(docs, "Trigger")
    assert trigger["metadata"]["name"] == f"{POST_ACUTE}-requests-shadow"
    assert trigger["spec"]["filter"]["attributes"]["inferenceservicename"] == POST_ACUTE
    assert trigger["spec"]["subscriber"]["ref"]["name"] == f"{POST_ACUTE}-shadow-predictor"
    assert trigger["spec"]["subscriber"]["uri"] == f"/v1/models/{POST_ACUTE}:predict"


def test_the_generated_shadow_trigger_is_the_shadow_overlays_own() -> None:
    """A further use case's shadow Trigger is generated; for readmission it must equal the
    overlay's hand-written one, so the two cannot drift apart."""
    from hospital_mlops.deploy.served_objects import shadow_trigger

    written = yaml.safe_load(
        (deploy.kustomize_root() / "overlays" / "shadow" / "trigger.yaml").read_text()
    )
    assert shadow_trigger(deploy.SERVICE, deploy.BROKER) == written


def test_a_re_render_of_another_stage_leaves_no_shadow_trigger_behind(tmp_path: Path) -> None:
    out = render_overlay(POST_ACUTE_MODEL, 4, "shadow", tmp_path / "o", image=IMAGE)
    assert (out / deploy.SHADOW_TRIGGER).is_file()
    render_overlay(POST_ACUTE_MODEL, 5, "production", out, image=IMAGE)
    assert not (out / deploy.SHADOW_TRIGGER).exists()
    assert {d["kind"] for d in build(out)} >= {"InferenceService", "Deployment"}


def test_a_model_of_no_use_case_or_without_its_own_objects_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DeployRenderError, match=r"^model 'nobody': no use case .* registers it"):
        render_overlay("nobody", 3, "canary", tmp_path / "out", image=IMAGE)
    # a use case whose kustomize directory is missing: named, not rendered into readmission's
    copy = tmp_path / "kustomize"
    shutil.copytree(deploy.kustomize_root(), copy)
    shutil.rmtree(copy / "use-cases" / POST_ACUTE / "model")
    monkeypatch.setattr(deploy, "kustomize_root", lambda: copy)
    with pytest.raises(DeployRenderError, match="use-cases/post-acute/model") as info:
        render_overlay(POST_ACUTE_MODEL, 3, "canary", tmp_path / "out", image=IMAGE)
    assert "post_acute_at_admission" in str(info.value)
    assert not (tmp_path / "out").exists()
