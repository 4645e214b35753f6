"""The harness (e2e/workloads.py) fails on a manifest error, naming it, with the real podman.

The wrong Secret key and the missing volume are refused before anything starts
(tests/unit/test_e2e_workloads.py); here podman's own ``kube play`` is shown refusing the wrong
key too, so the harness's check is not the only guard, and a readiness probe on a path the
server does not serve fails the run naming the probe once the real container answers 404.
Nothing is left behind: no pod, container, Secret or volume.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from e2e.workloads import (
    StandIns,
    Workload,
    WorkloadError,
    create_secrets,
    kube_yaml,
    plan,
    played,
    remove_secrets,
)
from tests.conftest import TEST_KEY
from tests.containers.conftest import Images, podman
from tests.unit.test_manifests import built, one

CDS = "Deployment/readmission-cds spec.template.spec.containers[cds]"


@pytest.fixture
def stand_ins(tmp_path: Path) -> StandIns:
    from hospital_mlops.ehr.cds_auth import DemoClient

    ehr = DemoClient.create(tmp_path / "ehr")
    return StandIns(
        secrets={
            "hmlops-registry": {"MLFLOW_TRACKING_URI": "http://10.88.0.1:1"},
            "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": TEST_KEY},
            # the container's own /tmp (its emptyDir): the service needs no other store to start
            "hmlops-prediction-log": {"HMLOPS_PREDICTION_LOG_URL": "sqlite:////tmp/p.sqlite"},
            "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL": "sqlite:////tmp/d.sqlite"},
        },
        config_maps={
            "hmlops-cds-trusted-clients": {
                "trusted-clients.json": ehr.trusted_clients_file.read_text()
            }
        },
    )


def _cds(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = one(docs, "Deployment", "readmission-cds")["spec"]["template"]["spec"][
        "containers"
    ]
    return dict(container)


def _cds_workload(docs: list[dict[str, Any]], values: StandIns, work: Path) -> Workload:
    (workload,) = [w for w in plan(docs, values, work, "t") if w.component == "cds"]
    return workload


def _nothing_left(workload: Workload, values: StandIns) -> None:
    assert podman("container", "exists", workload.container, check=False).returncode == 1
    assert podman("pod", "exists", "readmission-cds-pod-0", check=False).returncode == 1
    secrets = podman("secret", "ls", "--format", "{{.Name}}").stdout.split()
    assert not set(values.secrets) & set(secrets)


def test_a_readiness_probe_on_a_path_the_server_lacks_fails_naming_the_probe(
    images: Images, stand_ins: StandIns, tmp_path: Path
) -> None:
    docs = built("production")
    _cds(docs)["readinessProbe"]["httpGet"]["path"] = "/v2/health/readyz"
    workload = _cds_workload(docs, stand_ins, tmp_path)
    create_secrets(stand_ins)
    try:
        with (
            pytest.raises(WorkloadError) as caught,
            played(workload, stand_ins, images.serving, tmp_path, {}, 300.0),
        ):
            pytest.fail("the pod was taken for ready")
    finally:
        remove_secrets(stand_ins)
    assert str(caught.value) == (
        f"{CDS}.readinessProbe: GET /v2/health/readyz on port 8080 answered 404 3 times: the "
        "server has no such path (the pod would never be ready)"
    )
    _nothing_left(workload, stand_ins)


def test_podman_kube_play_itself_refuses_a_secret_key_the_secret_lacks(
    images: Images, stand_ins: StandIns, tmp_path: Path
) -> None:
    good = built("production")
    workload = _cds_workload(good, stand_ins, tmp_path)
    broken = built("production")
    (entry,) = [e for e in _cds(broken)["env"] if e["name"] == "HMLOPS_PREDICTION_LOG_URL"]
    entry["valueFrom"]["secretKeyRef"]["key"] = "PREDICTION_LOG_URL"
    bypassed = dataclasses.replace(workload, doc=one(broken, "Deployment", "readmission-cds"))
    file = tmp_path / "broken.yaml"
    file.write_text(kube_yaml([bypassed], stand_ins, images.serving, {}))
    create_secrets(stand_ins)
    try:
        proc = podman("kube", "play", "--network", "podman", str(file), check=False)
    finally:
        podman("kube", "down", str(file), check=False)
        podman("volume", "rm", "--force", "tmp", "hmlops-cds-trusted-clients", check=False)
        remove_secrets(stand_ins)
    assert proc.returncode != 0
    assert (
        "cannot set env HMLOPS_PREDICTION_LOG_URL: secret hmlops-prediction-log has not "
        "PREDICTION_LOG_URL key" in proc.stderr
    ), proc.stderr
    _nothing_left(workload, stand_ins)
