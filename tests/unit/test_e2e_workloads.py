"""The end-to-end harness's checks before anything starts (e2e/workloads.py), on the rendered
production overlay: a manifest error fails the run naming the field, and what ``podman kube
play`` is given is the rendered Deployment with only the local image and the Service names'
host aliases changed. The harness itself runs in ``make e2e``; a bad probe path needs a running
container (tests/containers/test_e2e_manifest_errors.py)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.workloads import StandIns, WorkloadError, _secret_payload, kube_yaml, plan
from tests.unit.test_manifests import built, one

IMAGE = "localhost/hospital-mlops/serving@sha256:" + "ab" * 32
ALIASES = {"readmission-predictor.hospital-mlops": "10.88.0.1"}


def _values() -> StandIns:
    return StandIns(
        secrets={
            "hmlops-registry": {"MLFLOW_TRACKING_URI": "http://10.88.0.1:5000"},
            "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": "k" * 32},
            "hmlops-prediction-log": {"HMLOPS_PREDICTION_LOG_URL": "postgresql+psycopg://x/p"},
            "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL": "postgresql+psycopg://x/d"},
        },
        config_maps={"hmlops-cds-trusted-clients": {"trusted-clients.json": "{}"}},
    )


def test_every_container_of_the_overlay_is_planned_predictor_first(tmp_path: Path) -> None:
    workloads = plan(built("production"), _values(), tmp_path, "t")
    assert [w.component for w in workloads] == ["predictor", "explainer", "detector", "cds"]
    assert [w.container for w in workloads] == [
        "t-predictor",
        "t-explainer",
        "readmission-drift-detector-pod-0-detector",  # podman kube play's own naming
        "readmission-cds-pod-0-cds",
    ]
    assert all(w.readiness.path == "/v2/health/ready" for w in workloads)
    cds = workloads[3].run
    assert cds.env["HMLOPS_PREDICTION_LOG_URL"] == "postgresql+psycopg://x/p"
    assert "HMLOPS_HMAC_PREVIOUS_KEY" not in cds.env  # optional, and no test value


def test_a_wrong_secret_key_fails_naming_the_field(tmp_path: Path) -> None:
    docs = built("production")
    cds = one(docs, "Deployment", "readmission-cds")
    (container,) = cds["spec"]["template"]["spec"]["containers"]
    (entry,) = [e for e in container["env"] if e["name"] == "HMLOPS_PREDICTION_LOG_URL"]
    entry["valueFrom"]["secretKeyRef"]["key"] = "PREDICTION_LOG_URL"
    with pytest.raises(WorkloadError) as caught:
        plan(docs, _values(), tmp_path, "t")
    message = str(caught.value)
    assert message.startswith("Deployment/readmission-cds spec.template.spec.containers[cds]")
    assert "env[HMLOPS_PREDICTION_LOG_URL].valueFrom.secretKeyRef" in message
    assert "Secret 'hmlops-prediction-log' key 'PREDICTION_LOG_URL'" in message


def test_a_mount_whose_volume_is_missing_fails_naming_it(tmp_path: Path) -> None:
    docs = built("production")
    detector = one(docs, "Deployment", "readmission-drift-detector")
    detector["spec"]["template"]["spec"]["volumes"] = []
    with pytest.raises(WorkloadError, match=r"volumeMounts\[tmp\]\.name: no volume 'tmp'"):
        plan(docs, _values(), tmp_path, "t")


def test_a_configmap_without_test_values_fails_naming_it(tmp_path: Path) -> None:
    values = StandIns(secrets=_values().secrets, config_maps={})
    with pytest.raises(WorkloadError, match="no test value for ConfigMap 'hmlops-cds-trusted"):
        plan(built("production"), values, tmp_path, "t")


def _without_local_changes(doc: dict[str, Any]) -> dict[str, Any]:
    doc["spec"].pop("replicas")
    pod = doc["spec"]["template"]["spec"]
    pod.pop("hostAliases", None)
    for container in pod["containers"]:
        container.pop("image")
        container.pop("imagePullPolicy")
    return doc


def test_kube_play_gets_the_rendered_deployment_with_only_the_local_image_and_aliases(
    tmp_path: Path,
) -> None:
    docs = built("production")
    workloads = plan(docs, _values(), tmp_path, "t")
    (cds,) = [w for w in workloads if w.component == "cds"]
    played = list(yaml.safe_load_all(kube_yaml([cds], _values(), IMAGE, ALIASES)))
    assert [d["kind"] for d in played] == ["ConfigMap", "Deployment"]
    assert played[0]["metadata"]["name"] == "hmlops-cds-trusted-clients"
    assert played[0]["data"] == {"trusted-clients.json": "{}"}
    deployment = played[1]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostAliases"] == [
        {"ip": "10.88.0.1", "hostnames": ["readmission-predictor.hospital-mlops"]}
    ]
    assert {c["image"] for c in pod["containers"]} == {IMAGE}
    assert {c["imagePullPolicy"] for c in pod["containers"]} == {"Never"}
    assert deployment["spec"]["replicas"] == 1  # rendered with 2: see kube_yaml
    rendered = one(built("production"), "Deployment", "readmission-cds")
    assert _without_local_changes(deployment) == _without_local_changes(rendered)
    # the detector's pod gets no ConfigMap it does not mount
    (detector,) = [w for w in workloads if w.component == "detector"]
    kinds = [d["kind"] for d in yaml.safe_load_all(kube_yaml([detector], _values(), IMAGE, {}))]
    assert kinds == ["Deployment"]


def test_a_secret_is_the_flat_base64_map_podman_4_3_kube_play_reads() -> None:
    payload = json.loads(_secret_payload({"URL": "postgresql+psycopg://u:p@h/d"}))
    assert payload == {"URL": base64.b64encode(b"postgresql+psycopg://u:p@h/d").decode()}
