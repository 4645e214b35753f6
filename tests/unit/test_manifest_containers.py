"""The translation of a rendered manifest's container into ``podman run`` (manifest_podman_run),
on the real production overlay (``kubectl kustomize``) and on broken input: no podman needed.

The container suite (tests/containers/test_serving_containers.py) runs what this translates."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from hospital_mlops.deploy import overlay as deploy
from hospital_mlops.deploy.manifest_confinement import parse_quantity
from hospital_mlops.deploy.manifest_container_spec import HttpProbe
from hospital_mlops.deploy.manifest_podman_run import ContainerRun, translate
from hospital_mlops.deploy.manifest_pods import (
    PodSource,
    inference_service_pod,
    kserve_explainer_args,
    serving_pods,
)
from hospital_mlops.deploy.manifest_refusals import ManifestTranslationError
from tests.unit.test_manifests import NAMESPACE, built, one

REGISTRY = "sqlite:////srv/test/state/mlflow.db"
SECRETS = {
    "hmlops-registry": {"MLFLOW_TRACKING_URI": REGISTRY},
    "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": "test-key"},
    "hmlops-prediction-log": {"HMLOPS_PREDICTION_LOG_URL": "sqlite:////srv/test/p.sqlite"},
    "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL": "sqlite:////srv/test/d.sqlite"},
}
TRUSTED = {"trusted-clients": "/srv/test/cds"}
POSTURE = [
    "--user", "10001:10001", "--read-only", "--read-only-tmpfs=false",
    "--security-opt", "no-new-privileges", "--cap-drop", "ALL",
]  # fmt: skip


def _production() -> dict[str, PodSource]:
    return serving_pods(built("production"))


def _container(source: PodSource) -> dict[str, Any]:
    (container,) = source.spec["containers"]
    return dict(container)


def _pairs(options: tuple[str, ...], flag: str) -> list[str]:
    return [options[i + 1] for i, o in enumerate(options) if o == flag]


def _contains(options: tuple[str, ...], run: list[str]) -> bool:
    return any(list(options[i : i + len(run)]) == run for i in range(len(options)))


# ------------------------------------------------------------------------ the production overlay


@pytest.mark.parametrize("component", ["predictor", "explainer", "detector", "cds"])
def test_each_production_container_translates_to_its_posture(component: str) -> None:
    source = _production()[component]
    container = _container(source)
    run = translate(source, secrets=SECRETS, volume_dirs=TRUSTED)
    options = run.options

    # the command: the manifest's, with whatever the controller appends (the explainer's)
    assert _pairs(options, "--entrypoint") == [json.dumps(container["command"])]
    assert list(run.args[: len(container["args"])]) == container["args"]
    # the posture, in podman's terms; the image's root stays read-only, /tmp is the emptyDir
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False
    assert _contains(options, POSTURE[:2]) and "--read-only" in options
    assert "--read-only-tmpfs=false" in options  # podman's own /tmp, /run would hide a gap
    assert _pairs(options, "--security-opt") == ["no-new-privileges"]
    assert _pairs(options, "--cap-drop") == ["ALL"] and "--cap-add" not in options
    assert "--privileged" not in options
    (volume,) = [v for v in source.spec["volumes"] if v["name"] == "tmp"]
    size = int(parse_quantity(volume["emptyDir"]["sizeLimit"], "test"))
    assert _pairs(options, "--tmpfs") == [f"/tmp:rw,size={size}"]
    # resources: the limits enforced, the CPU request as shares
    limits = container["resources"]["limits"]
    assert _pairs(options, "--memory") == [str(int(parse_quantity(limits["memory"], "t")))]
    assert _pairs(options, "--memory-swap") == _pairs(options, "--memory")
    assert _pairs(options, "--cpus") == [str(limits["cpu"])]
    assert _pairs(options, "--cpu-shares")
    assert _pairs(options, "--pull") == ["never"]
    # every env var of the manifest is set: plain values as written, Secret refs from test values
    env = dict(e.split("=", 1) for e in _pairs(options, "--env"))
    assert env == dict(run.env)
    for entry in container["env"]:
        ref = entry.get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            assert env[entry["name"]] == entry["value"]
        elif ref["name"] in SECRETS and ref["key"] in SECRETS[ref["name"]]:
            assert env[entry["name"]] == SECRETS[ref["name"]][ref["key"]]
        else:  # HMLOPS_HMAC_PREVIOUS_KEY: optional, unset outside a key rotation
            assert ref.get("optional") is True and entry["name"] not in env
    assert env["MLFLOW_TRACKING_URI"] == REGISTRY
    # the readiness probe, its named port resolved
    assert run.readiness == HttpProbe(
        "readiness", "/v2/health/ready", 8080, initial_delay_seconds=0, period_seconds=5
    )
    assert run.liveness is not None and run.liveness.path == "/v2/health/live"
    assert run.port(8080) == 8080
    # what has no runtime effect on one container is listed, never silently dropped
    assert any(k.endswith(".image") for k in run.not_reproduced)
    assert any(k.endswith("serviceAccountName") for k in run.not_reproduced)


def test_the_cli_accepts_every_translated_command_line() -> None:
    from hospital_mlops.cli.main import build_parser

    runs = {
        name: translate(source, secrets=SECRETS, volume_dirs=TRUSTED)
        for name, source in _production().items()
    }
    host = deploy.predictor_host(deploy.SERVICE, NAMESPACE)
    parser = build_parser()
    for name, run in runs.items():
        args = parser.parse_args(list(run.args))
        assert args.port == 8080 and args.bind == "0.0.0.0", name
    assert parser.parse_args(list(runs["explainer"].args)).predictor_host == host
    assert parser.parse_args(list(runs["cds"].args)).predictor_url == f"http://{host}"


def test_the_explainer_gets_kserves_arguments_and_the_predictor_none() -> None:
    docs = built("production")
    isvc = one(docs, "InferenceService", deploy.SERVICE)
    explainer = translate(inference_service_pod(isvc, "explainer"), secrets=SECRETS)
    assert list(explainer.args) == kserve_explainer_args(isvc)
    declared = isvc["spec"]["explainer"]["containers"][0]["args"]
    assert list(explainer.args[len(declared) :]) == [
        "--model_name", deploy.SERVICE, "--http_port", "8080"
    ]  # fmt: skip
    predictor = translate(inference_service_pod(isvc, "predictor"), secrets=SECRETS)
    assert list(predictor.args) == isvc["spec"]["predictor"]["containers"][0]["args"]
    # KServe's other rules, on edited copies
    bare = copy.deepcopy(isvc)
    bare["spec"]["explainer"]["containers"][0]["args"] = ["serve-one", "explainer"]
    bare["spec"]["explainer"]["containerConcurrency"] = 4
    assert kserve_explainer_args(bare) == [
        "serve-one", "explainer", "--model_name", deploy.SERVICE,
        "--predictor_host", f"{deploy.SERVICE}-predictor.{NAMESPACE}",
        "--http_port", "8080", "--workers", "4",
    ]  # fmt: skip
    run = translate(inference_service_pod(bare, "explainer"), secrets=SECRETS)
    assert run.args[-2:] == ("--workers", "4")
    assert any("containerConcurrency" in k for k in run.not_reproduced)


def test_the_cds_trusted_clients_come_from_the_callers_directory_read_only() -> None:
    cds = translate(_production()["cds"], secrets=SECRETS, volume_dirs=TRUSTED)
    assert _pairs(cds.options, "--mount") == ["type=bind,src=/srv/test/cds,dst=/etc/hmlops/cds,ro"]
    assert cds.env["HMLOPS_CDS_TRUSTED_CLIENTS"] == "/etc/hmlops/cds/trusted-clients.json"
    assert _pairs(cds.options, "--group-add") == ["10001"]  # the pod's fsGroup
    with pytest.raises(ManifestTranslationError, match="hmlops-cds-trusted-clients"):
        translate(_production()["cds"], secrets=SECRETS)


def test_podman_args_publish_only_declared_ports_and_add_the_callers_hosts() -> None:
    run = translate(_production()["cds"], secrets=SECRETS, volume_dirs=TRUSTED)
    argv = run.podman_args(
        "localhost/img@sha256:abc",
        name="c1",
        network="podman",
        publish=[("127.0.0.1", 18080, "http")],
        add_hosts={"readmission-predictor.hospital-mlops": "10.88.0.1"},
    )
    assert argv[:3] == ["run", "--detach", "--name"]
    image = argv.index("localhost/img@sha256:abc")
    assert argv[image + 1 :] == list(run.args)
    assert list(argv[image - len(run.options) : image]) == list(run.options)
    assert "127.0.0.1:18080:8080" in argv
    assert "readmission-predictor.hospital-mlops:10.88.0.1" in argv
    with pytest.raises(ManifestTranslationError, match="no port 'metrics'"):
        run.podman_args("img", name="c", publish=[("127.0.0.1", 1, "metrics")])


def test_without_the_tmp_emptydir_the_root_stays_read_only() -> None:
    """What the container suite runs to show a broken manifest fails: no tmpfs at all, and
    podman's own writable /tmp stays off."""
    source = _production()["predictor"]
    spec = copy.deepcopy(dict(source.spec))
    spec["containers"][0]["volumeMounts"] = []
    run = translate(PodSource(source.where, spec), secrets=SECRETS)
    assert "--tmpfs" not in run.options
    assert "--read-only" in run.options and "--read-only-tmpfs=false" in run.options


# ------------------------------------------------------------------------------- broken input


def _edited(component: str, edit: Any) -> PodSource:
    source = _production()[component]
    spec = copy.deepcopy(dict(source.spec))
    edit(spec, spec["containers"][0])
    return PodSource(source.where, spec, source.appended_args, source.not_reproduced)


def _refused(source: PodSource, match: str) -> str:
    with pytest.raises(ManifestTranslationError, match=match) as caught:
        translate(source, secrets=SECRETS, volume_dirs=TRUSTED)
    return str(caught.value)


def _host_path(pod: dict[str, Any], c: dict[str, Any]) -> None:
    pod["volumes"].append({"name": "h", "hostPath": {"path": "/"}})
    c["volumeMounts"].append({"name": "h", "mountPath": "/h"})


def _field_ref(pod: dict[str, Any], c: dict[str, Any]) -> None:
    c["env"].append({"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "a"}}})


UNHONOURED = {
    "lifecycle": (
        lambda pod, c: c.update(lifecycle={"preStop": {}}),
        r"containers\[kserve-container\]\.lifecycle",
    ),
    "envFrom": (lambda pod, c: c.update(envFrom=[{"secretRef": {"name": "x"}}]), r"\.envFrom"),
    "hostNetwork": (lambda pod, c: pod.update(hostNetwork=True), r"predictor\.hostNetwork"),
    "procMount": (
        lambda pod, c: c["securityContext"].update(procMount="Unmasked"),
        r"securityContext\.procMount",
    ),
    "privileged": (
        lambda pod, c: c["securityContext"].update(privileged=True),
        r"securityContext\.privileged",
    ),
    "seccomp": (
        lambda pod, c: c["securityContext"].update(seccompProfile={"type": "Unconfined"}),
        r"securityContext\.seccompProfile",
    ),
    "gpu": (
        lambda pod, c: c["resources"]["limits"].update({"nvidia.com/gpu": 1}),
        r"limits\.nvidia\.com/gpu",
    ),
    "exec probe": (
        lambda pod, c: c["readinessProbe"].update(exec={"command": ["true"]}),
        r"readinessProbe\.exec",
    ),
    "subPath": (
        lambda pod, c: c["volumeMounts"][0].update(subPath="x"),
        r"volumeMounts\[tmp\]\.subPath",
    ),
    "hostPath": (_host_path, r"volumes\[h\]\.hostPath"),
    "expansion": (
        lambda pod, c: c["args"].append("--model=$(MODEL)"),
        r"args: \$\(VAR\) expansion",
    ),
    "token": (
        lambda pod, c: pod.update(automountServiceAccountToken=True),
        "automountServiceAccountToken",
    ),
    "fieldRef": (_field_ref, r"env\[X\]\.valueFrom\.fieldRef"),
}


@pytest.mark.parametrize(("edit", "field"), list(UNHONOURED.values()), ids=list(UNHONOURED))
def test_a_field_the_translation_cannot_honour_is_an_error_naming_it(edit: Any, field: str) -> None:
    _refused(_edited("predictor", edit), field)


def test_an_unresolved_secret_is_an_error_naming_the_secret_and_key() -> None:
    source = _production()["predictor"]
    secrets = {k: v for k, v in SECRETS.items() if k != "hmlops-hmac-key"}
    with pytest.raises(ManifestTranslationError) as caught:
        translate(source, secrets=secrets)
    message = str(caught.value)
    assert "HMLOPS_HMAC_KEY" in message and "'hmlops-hmac-key'" in message
    assert "Secret" in message and "env[HMLOPS_HMAC_KEY]" in message
    # a missing key of a Secret that exists is as much an error
    wrong_key = {**SECRETS, "hmlops-registry": {"MLFLOW_URI": REGISTRY}}
    with pytest.raises(
        ManifestTranslationError, match="'hmlops-registry' key 'MLFLOW_TRACKING_URI'"
    ):
        translate(source, secrets=wrong_key)
    # and a ConfigMap ref, likewise
    edited = _edited(
        "predictor",
        lambda pod, c: c["env"].append(
            {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}
        ),
    )
    _refused(edited, "ConfigMap 'cm' key 'k'")
    assert translate(edited, secrets=SECRETS, config_maps={"cm": {"k": "v"}}).env["Y"] == "v"


def test_an_optional_secret_may_be_absent_but_is_used_when_given() -> None:
    cds = _production()["cds"]
    assert (
        "HMLOPS_HMAC_PREVIOUS_KEY" not in translate(cds, secrets=SECRETS, volume_dirs=TRUSTED).env
    )
    rotating = {
        **SECRETS,
        "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": "new", "HMLOPS_HMAC_PREVIOUS_KEY": "old"},
    }
    run = translate(cds, secrets=rotating, volume_dirs=TRUSTED)
    assert run.env["HMLOPS_HMAC_PREVIOUS_KEY"] == "old"


def test_a_named_probe_port_that_does_not_exist_is_an_error() -> None:
    def rename(pod: dict[str, Any], c: dict[str, Any]) -> None:
        c["readinessProbe"]["httpGet"]["port"] = "metrics"

    message = _refused(_edited("detector", rename), "readinessProbe.httpGet.port")
    assert "no port named 'metrics'" in message and "['http']" in message

    def unnamed(pod: dict[str, Any], c: dict[str, Any]) -> None:
        del c["ports"][0]["name"]

    _refused(_edited("detector", unnamed), "no port named 'http'")


def test_a_mount_of_a_volume_the_pod_lacks_is_an_error() -> None:
    def orphan(pod: dict[str, Any], c: dict[str, Any]) -> None:
        pod["volumes"] = []

    _refused(_edited("predictor", orphan), r"volumeMounts\[tmp\]\.name: no volume 'tmp'")


def test_run_as_non_root_is_checked() -> None:
    def root(pod: dict[str, Any], c: dict[str, Any]) -> None:
        c["securityContext"]["runAsUser"] = 0

    _refused(_edited("predictor", root), "runAsUser: 0 but runAsNonRoot")

    def unknown_user(pod: dict[str, Any], c: dict[str, Any]) -> None:
        del c["securityContext"]["runAsUser"]
        pod.get("securityContext", {}).pop("runAsUser", None)

    _refused(_edited("detector", unknown_user), "runAsNonRoot: needs runAsUser")


def test_the_pod_security_context_applies_where_the_container_is_silent() -> None:
    def pod_level(pod: dict[str, Any], c: dict[str, Any]) -> None:
        del c["securityContext"]["runAsUser"], c["securityContext"]["runAsGroup"]
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"] = 10002, 10003

    run = translate(_edited("detector", pod_level), secrets=SECRETS)
    assert _pairs(run.options, "--user") == ["10002:10003"]


@pytest.mark.parametrize(
    ("quantity", "value"),
    [("250m", "0.25"), ("2", "2"), (2, "2"), ("1Gi", str(2**30)), ("512Mi", str(2**29)),
     ("1G", "1000000000"), ("1e3", "1000"), ("0.5", "0.5"), ("1.5Gi", str(3 * 2**29))],
)  # fmt: skip
def test_kubernetes_quantities(quantity: Any, value: str) -> None:
    from decimal import Decimal

    assert parse_quantity(quantity, "q") == Decimal(value)


@pytest.mark.parametrize("bad", ["1GB", "", "ten", "1 Gi", True])
def test_a_bad_quantity_is_an_error_naming_the_field(bad: Any) -> None:
    with pytest.raises(ManifestTranslationError, match=r"resources\.limits\.memory"):
        parse_quantity(bad, "x.resources.limits.memory")


def test_the_result_is_plain_data() -> None:
    run = translate(_production()["predictor"], secrets=SECRETS)
    assert isinstance(run, ContainerRun)
    assert all(isinstance(o, str) for o in run.options)
    assert all(isinstance(a, str) for a in run.args)
