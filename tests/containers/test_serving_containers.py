"""The serving image's four servers run as the production overlay declares them.

The predictor, the explainer, the drift detector and the CDS Hooks service each run in a
container of the serving image (``images.serving``, the digest `make images` built) with the
command, arguments, security context, volumes, resources and environment of the rendered
production overlay (``kubectl kustomize``), translated by
``hospital_mlops.deploy.manifest_podman_run``:
nothing here is a hand-written ``podman run`` line. The only additions are the test
environment's:

* Secrets and ConfigMaps from test values: the HMAC key is ``tests.conftest.TEST_KEY``; the
  registry is a copy of the session's SQLite registry (owned by the image's uid 10001), mounted at
  the session registry's own path because MLflow records artifact locations as absolute paths;
  the prediction log and the drift store are SQLite files in a mounted directory of the test
  (the predictor and the CDS service share the prediction log, as on the cluster); the CDS
  service's trusted clients are a demo EHR's public key, in the directory that stands in for the
  ``hmlops-cds-trusted-clients`` ConfigMap.
* The network: each container is on podman's default bridge with its port 8080 published on
  127.0.0.1:<free port>. **The Kubernetes Service stand-in:** the predictor is also published
  at the bridge's gateway, 10.88.0.1:80, and the explainer and the CDS service get
  ``--add-host readmission-predictor.hospital-mlops:10.88.0.1``, so the host name their
  manifests name (``http://readmission-predictor.hospital-mlops``, port 80, as Knative serves
  it) reaches the containerized predictor.

Each container must pass its readiness probe (the manifest's path and port, named ports
resolved) within a bounded time, or the test fails with the tail of its ``podman logs``. Then a
real request goes through each; the containerized predictor's answers are the host process's
answers exactly; the posture is checked from inside each running container (``podman exec``);
and the predictor without its /tmp emptyDir must fail to start, saying why. Every container is
removed afterwards, whatever happened.

Run: ``.venv/bin/pytest -q tests/containers/test_serving_containers.py -p no:cacheprovider``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from hospital_mlops.deploy import overlay as deploy
from hospital_mlops.deploy.manifest_podman_run import ContainerRun, translate
from hospital_mlops.deploy.manifest_pods import PodSource, serving_pods
from tests.conftest import TEST_KEY
from tests.containers.conftest import Images, podman
from tests.integration.conftest import HMLOPS, hmlops
from tests.unit.test_manifests import NAMESPACE, built

UID = 10001
NETWORK = "podman"  # podman's default bridge, 10.88.0.0/16
GATEWAY = "10.88.0.1"
SERVICE_PORT = 80  # Knative serves the predictor's Service on 80
PREDICTOR_HOST = deploy.predictor_host(deploy.SERVICE, NAMESPACE)
MODEL = "readmission-30d"
READY_TIMEOUT = 300.0  # seconds; four servers start at once on a small machine
COMPONENTS = ("predictor", "explainer", "detector", "cds")
DISCHARGE = "/cds-services/readmission-risk-discharge"


# ------------------------------------------------------------------------------------- helpers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _logs(name: str, tail: int = 60, keep: int | None = 6000) -> str:
    """The container's last lines; ``keep`` trims them for failure messages (None keeps all,
    for assertions on a line that may sit behind many access-log lines)."""
    proc = podman("logs", "--tail", str(tail), name, check=False, timeout=60)
    text = proc.stdout + proc.stderr
    return text if keep is None else text[-keep:]


def _state(name: str) -> tuple[str, int]:
    proc = podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", name, check=False)
    status, _, code = proc.stdout.strip().partition(" ")
    return status, int(code or 0)


@dataclass
class Server:
    """A running container: its name, its translation, and its published 8080."""

    name: str
    run: ContainerRun
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready_url(self) -> str:
        probe = self.run.readiness
        assert probe is not None, f"{self.run.where} declares no readiness probe"
        assert probe.port == 8080  # the published port
        return probe.url("127.0.0.1", self.port)


def _start(
    images: Images,
    run: ContainerRun,
    name: str,
    binds: list[tuple[str, str]],
    cleanup: Callable[[Callable[[], object]], None],
    *,
    service: bool = False,
    add_hosts: dict[str, str] | None = None,
) -> Server:
    port = _free_port()
    publish: list[tuple[str, int, int | str]] = [("127.0.0.1", port, 8080)]
    if service:
        publish.append((GATEWAY, SERVICE_PORT, 8080))
    argv = run.podman_args(
        images.serving,
        name=name,
        network=NETWORK,
        publish=publish,
        add_hosts=add_hosts,
        binds=binds,
    )
    # removed at teardown even if the run fails half-way
    cleanup(lambda: podman("rm", "--force", "--ignore", "--time", "5", name, check=False))
    podman(*argv, timeout=120)
    return Server(name, run, port)


def _wait_ready(server: Server, deadline: float) -> float:
    """Seconds until the readiness probe answered 200; fails with the logs tail if the
    container exits or the deadline passes."""
    started = time.monotonic()
    url = server.ready_url()
    while True:
        status, code = _state(server.name)
        if status not in ("running", "created", "configured"):
            pytest.fail(
                f"{server.name} ({server.run.where}) {status} with {code} before it was ready:\n"
                f"{_logs(server.name)}"
            )
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(
                f"{server.name} ({server.run.where}) not ready at {url} within "
                f"{READY_TIMEOUT:.0f} s:\n{_logs(server.name)}"
            )
        time.sleep(0.5)


def _exec(name: str, script: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", name, "sh", "-c", script, check=False, timeout=60)


# ------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def production() -> dict[str, PodSource]:
    return serving_pods(built("production"))


@dataclass
class StandIns:
    secrets: dict[str, dict[str, str]]
    volume_dirs: dict[str, str]
    binds: list[tuple[str, str]]
    ehr: Any  # cds_auth.DemoClient
    data: Path


@pytest.fixture(scope="module")
def test_values(
    d130_champion: int, registry_state: Path, tmp_path_factory: pytest.TempPathFactory
) -> StandIns:
    """The Secrets' and the ConfigMap's test values, and the directories they point at."""
    from hospital_mlops.ehr.cds_auth import DemoClient

    work = tmp_path_factory.mktemp("serving-containers")
    # The registry, copied (never the session's own: it is chowned to the image's uid) with
    # SQLite's backup API, its artifacts beside it, mounted at the original path.
    registry = work / "registry"
    registry.mkdir()
    source, copied = (
        sqlite3.connect(registry_state / "mlflow.db"),
        sqlite3.connect(registry / "mlflow.db"),
    )
    try:
        source.backup(copied)
        # where the served models' artifacts and evidence are (the Default experiment's
        # location, unused, is wherever the database was first created)
        locations = [
            str(row[0])
            for query in (
                "SELECT storage_location FROM model_versions",
                "SELECT artifact_uri FROM runs",
            )
            for row in copied.execute(query)
        ]
    finally:
        source.close()
        copied.close()
    outside = [loc for loc in locations if not loc.startswith(registry_state.as_uri() + "/")]
    assert locations and not outside, f"artifacts outside the mounted registry: {outside}"
    shutil.copytree(registry_state / "mlartifacts", registry / "mlartifacts")
    data = work / "data"  # the prediction log and the drift store
    data.mkdir()
    for path in [registry, data, *registry.rglob("*")]:
        os.chown(path, UID, UID)
    cds = work / "cds-trusted-clients"  # the ConfigMap hmlops-cds-trusted-clients
    ehr = DemoClient.create(work / "ehr")
    cds.mkdir(mode=0o755)
    (cds / "trusted-clients.json").write_text(ehr.trusted_clients_file.read_text())
    (cds / "trusted-clients.json").chmod(0o644)
    return StandIns(
        secrets={
            "hmlops-registry": {"MLFLOW_TRACKING_URI": f"sqlite:///{registry_state}/mlflow.db"},
            "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": TEST_KEY},
            "hmlops-prediction-log": {
                "HMLOPS_PREDICTION_LOG_URL": f"sqlite:///{data}/predictions.sqlite"
            },
            "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL": f"sqlite:///{data}/drift.sqlite"},
        },
        volume_dirs={"trusted-clients": str(cds)},
        binds=[(str(registry), str(registry_state)), (str(data), str(data))],
        ehr=ehr,
        data=data,
    )


def _translated(production: dict[str, PodSource], values: StandIns) -> dict[str, ContainerRun]:
    return {
        name: translate(source, secrets=values.secrets, volume_dirs=values.volume_dirs)
        for name, source in production.items()
    }


@pytest.fixture(scope="module")
def stack(
    images: Images,
    production: dict[str, PodSource],
    test_values: StandIns,
    request: pytest.FixtureRequest,
) -> Iterator[dict[str, Server]]:
    """The four servers, started together (the predictor first: it brings up the bridge its
    Service stand-in is published on), each waited for through its readiness probe."""
    import psutil

    taken = [
        c.laddr
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN
        and c.laddr.port == SERVICE_PORT
        and c.laddr.ip in (GATEWAY, "0.0.0.0", "::")
    ]
    assert not taken, f"the Service stand-in's {GATEWAY}:{SERVICE_PORT} is taken: {taken}"
    runs = _translated(production, test_values)
    prefix = f"hmlops-test-{os.getpid()}"
    aliases = {PREDICTOR_HOST: GATEWAY}
    servers = {
        "predictor": _start(
            images, runs["predictor"], f"{prefix}-predictor", test_values.binds,
            request.addfinalizer, service=True,
        ),
    }  # fmt: skip
    for name in ("explainer", "detector", "cds"):
        servers[name] = _start(
            images, runs[name], f"{prefix}-{name}", test_values.binds, request.addfinalizer,
            add_hosts=aliases if name in ("explainer", "cds") else None,
        )  # fmt: skip
    deadline = time.monotonic() + READY_TIMEOUT
    for server in servers.values():
        _wait_ready(server, deadline)
    yield servers


@pytest.fixture(scope="module")
def host_predictor(d130_champion: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same predictor as a host process from the venv (the session's registry)."""
    from serving.readiness import NotReady, wait_until_ready

    port = _free_port()
    log = tmp_path_factory.mktemp("host-predictor") / "predictor.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*HMLOPS, "serve-one", "predictor", "--model", f"{MODEL}@champion",
             "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "HMLOPS_HMAC_KEY": TEST_KEY},
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/v2/health/ready", process, log, timeout=READY_TIMEOUT)
    except NotReady as exc:
        process.kill()
        pytest.fail(f"host predictor: {exc}\n{log.read_text()[-3000:]}")
    yield base
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def example_body(d130_champion: int) -> dict[str, Any]:
    proc = hmlops("serve", "--print-example-request")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout))


# ---------------------------------------------------------------------------------------- tests


def _predict(base: str, instances: list[dict[str, Any]]) -> list[dict[str, Any]]:
    answer = httpx.post(
        f"{base}/v1/models/readmission:predict", json={"instances": instances}, timeout=60
    )
    assert answer.status_code == 200, answer.text[:2000]
    return list(answer.json()["predictions"])


def test_the_containers_run_what_the_manifest_declares(stack: dict[str, Server]) -> None:
    """What podman actually runs (its inspect record) is the translation of the manifest."""
    for server in stack.values():
        proc = podman("inspect", "--format", "{{json .Config}}||{{json .HostConfig}}", server.name)
        config, host = (json.loads(part) for part in proc.stdout.strip().split("||"))
        entrypoint = config["Entrypoint"]  # podman 4.3 records a string, later ones a list
        assert entrypoint in (["hmlops"], "hmlops"), server.name
        assert config["Cmd"] == list(server.run.args), server.name
        assert config["User"] == f"{UID}:{UID}", server.name
        assert host["ReadonlyRootfs"] is True, server.name
        assert "no-new-privileges" in host["SecurityOpt"], server.name
        assert not host.get("CapAdd"), server.name
        env = dict(item.split("=", 1) for item in config["Env"])
        for key, value in server.run.env.items():
            assert env[key] == value, f"{server.name}: {key}"


def test_the_predictor_answers_as_the_host_process_does(
    stack: dict[str, Server], host_predictor: str, example_body: dict[str, Any], d130_champion: int
) -> None:
    """The same requests, the same risks (and bands and reasons) from the image as from the
    venv: the image scores with the same model and the same code."""
    from hospital_mlops.inference.registered_examples import registered_examples

    instances = [*example_body["instances"], *registered_examples(MODEL, "champion", n=30, seed=5)]
    ours = _predict(stack["predictor"].base, instances)
    theirs = _predict(host_predictor, instances)
    assert len(ours) == len(theirs) == len(instances)
    for mine, host in zip(ours, theirs, strict=True):
        assert mine["model_version"] == host["model_version"] == f"{MODEL}/{d130_champion}"
        assert abs(mine["risk"] - host["risk"]) <= 1e-12, (mine["risk"], host["risk"])
        assert mine["risk"] == host["risk"]  # in fact exactly
        assert mine["band"] == host["band"] and mine["reasons"] == host["reasons"]
        assert mine["prediction_id"] != host["prediction_id"]
    # and through the Service stand-in, as the explainer and the CDS service reach it
    via_service = _predict(f"http://{GATEWAY}:{SERVICE_PORT}", instances[:1])
    assert via_service[0]["risk"] == ours[0]["risk"]


def test_the_explainer_explains_through_the_predictors_service_name(
    stack: dict[str, Server], example_body: dict[str, Any]
) -> None:
    explain = f"{stack['explainer'].base}/v1/models/{deploy.SERVICE}:explain"
    clinician = httpx.post(explain, json=example_body, timeout=120)
    assert clinician.status_code == 200, clinician.text[:2000]
    (explanation,) = clinician.json()["explanations"]
    (direct,) = _predict(stack["predictor"].base, example_body["instances"])
    # the explainer's answer came from the containerized predictor (risk and version)
    assert explanation["risk"] == direct["risk"]
    assert explanation["model_version"] == direct["model_version"]
    assert explanation["reasons"] and explanation["summary"].startswith("Chance of")
    technical = httpx.post(explain, json={**example_body, "view": "technical"}, timeout=180)
    assert technical.status_code == 200, technical.text[:2000]
    assert technical.json()["explanations"]


def test_the_detector_tests_a_window_of_the_loggers_events(
    stack: dict[str, Server], test_values: StandIns
) -> None:
    """The KServe agent's logger is not reproduced: this test posts what it would, binary-mode
    CloudEvents of each request and the containerized predictor's response, to the detector's
    root, until a window of 1,000 in-use encounters is tested."""
    from hospital_mlops.drift.inference_events import binary_headers
    from hospital_mlops.features import diabetes130_out_of_cohort_row
    from hospital_mlops.inference.registered_examples import registered_examples

    detector = stack["detector"].base
    assert httpx.get(f"{detector}/drift/latest", timeout=10).json()["status"] == "collecting"
    encounters = registered_examples(MODEL, "champion", n=1100, seed=3)
    outside = sum(diabetes130_out_of_cohort_row(e) for e in encounters)
    assert 1100 - outside >= 1000
    for start in range(0, 1100, 100):
        body = {"instances": encounters[start : start + 100]}
        answer = httpx.post(
            f"{stack['predictor'].base}/v1/models/readmission:predict", json=body, timeout=60
        )
        assert answer.status_code == 200
        event_id = f"container-{start}"
        for kind, payload in (("request", json.dumps(body).encode()), ("response", answer.content)):
            headers = binary_headers(event_id, kind, deploy.SERVICE, namespace=NAMESPACE)
            posted = httpx.post(f"{detector}/", content=payload, headers=headers, timeout=30)
            assert posted.status_code == 202, posted.text[:1000]
    deadline = time.monotonic() + 120
    latest: dict[str, Any] = {}
    while time.monotonic() < deadline:
        latest = httpx.get(f"{detector}/drift/latest", timeout=10).json()
        if latest.get("status") == "tested":
            break
        time.sleep(0.5)
    assert latest.get("status") == "tested", latest
    assert latest["window_size"] == 1000 and isinstance(latest["is_drift"], bool)
    assert latest["rows_outside_intended_use"] == outside
    assert latest["events_received"] == {"request": 11, "response": 11}
    assert 0 <= latest["score_p_value"] <= 1
    # the result is in the drift store the Secret names (the mounted SQLite file)
    store = test_values.data / "drift.sqlite"
    assert stack["detector"].run.env["HMLOPS_DRIFT_DB_URL"] == f"sqlite:///{store}"
    assert store.stat().st_size > 0


def test_the_cds_service_answers_a_signed_discharge_call_with_the_models_card(
    stack: dict[str, Server], test_values: StandIns
) -> None:
    from hospital_mlops.cli.cds import example_request
    from hospital_mlops.ehr.fhir_examples import example_instance

    cds = stack["cds"].base
    url = f"{cds}{DISCHARGE}"
    unsigned = httpx.post(url, json=example_request("complete"), timeout=60)
    assert unsigned.status_code == 401  # the manifest runs it with client JWTs required
    answer = httpx.post(
        url,
        json=example_request("complete"),
        headers=test_values.ehr.authorization(url),
        timeout=60,
    )
    assert answer.status_code == 200, f"{answer.text[:2000]}\n{_logs(stack['cds'].name)}"
    (card,) = answer.json()["cards"]
    (direct,) = _predict(stack["predictor"].base, [example_instance()])
    # the model's card (not the fallback's), scored by the containerized predictor
    assert card["summary"].startswith("30-day readmission risk")
    assert (
        f"{round(direct['risk'] * 100)}%" in card["summary"] and direct["band"] in card["summary"]
    )
    assert f"_Model {direct['model_version']}; prediction {card['uuid']}._" in card["detail"]


@pytest.mark.parametrize("component", COMPONENTS)
def test_the_posture_is_in_force_inside_the_running_container(
    stack: dict[str, Server], component: str
) -> None:
    name = stack[component].name
    uid = _exec(name, "id -u")
    assert uid.stdout.strip() == str(UID), uid.stderr
    for path in ("/probe", "/opt/probe", "/opt/hospital-mlops/probe", "/etc/probe"):
        wrote = _exec(name, f"touch {path}")
        assert wrote.returncode != 0, f"{name}: {path} is writable"
        assert "Read-only file system" in wrote.stderr, wrote.stderr
    tmp = _exec(name, "touch /tmp/probe && rm /tmp/probe && echo ok")
    assert tmp.stdout.strip() == "ok", tmp.stderr
    status = _exec(name, "cat /proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert int(fields["CapEff"].strip(), 16) == 0, fields["CapEff"]
    assert int(fields["CapPrm"].strip(), 16) == 0, fields["CapPrm"]
    assert fields["NoNewPrivs"].strip() == "1"
    assert fields["Seccomp"].strip() == "2"  # a filter: the runtime's default profile
    # /tmp is the emptyDir: a tmpfs of the manifest's sizeLimit
    mounts = _exec(name, "cat /proc/mounts").stdout
    (tmp_mount,) = [line for line in mounts.splitlines() if line.split()[1] == "/tmp"]
    assert tmp_mount.split()[2] == "tmpfs"


def test_without_its_tmp_emptydir_the_predictor_never_becomes_ready(
    images: Images,
    production: dict[str, PodSource],
    test_values: StandIns,
    container_name: str,
) -> None:
    """The manifest with the /tmp volumeMount removed, the root still read-only: nothing in the
    image is writable, Python's tempfile finds no usable directory, MLflow cannot download the
    model, and the predictor refuses to start (on a cluster: never ready, CrashLoopBackOff)."""
    source = production["predictor"]
    spec = copy.deepcopy(dict(source.spec))
    (container,) = spec["containers"]
    container["volumeMounts"] = [m for m in container["volumeMounts"] if m["mountPath"] != "/tmp"]
    broken = translate(
        PodSource(source.where, spec, source.appended_args, source.not_reproduced),
        secrets=test_values.secrets,
    )
    assert "--tmpfs" not in broken.options and "--read-only" in broken.options
    server = _start(images, broken, container_name, test_values.binds, lambda _: None)
    deadline = time.monotonic() + 180
    ready = False
    while time.monotonic() < deadline:
        status, code = _state(server.name)
        with contextlib.suppress(httpx.HTTPError):
            ready = httpx.get(server.ready_url(), timeout=2).status_code == 200
        assert not ready, f"ready without /tmp:\n{_logs(server.name)}"
        if status == "exited":
            break
        time.sleep(0.5)
    logs = _logs(server.name)
    status, code = _state(server.name)
    assert status == "exited", f"still {status} after 180 s, never ready:\n{logs}"
    assert code == 1, logs  # hmlops serve-one: the model is not ready
    assert "the model is not ready" in logs, logs
    assert "No usable temporary directory found in ['/tmp'" in logs, logs


def test_the_explainer_command_is_what_kserve_runs(
    stack: dict[str, Server], production: dict[str, PodSource]
) -> None:
    """KServe's appended arguments are in the running explainer's command line."""
    args = list(stack["explainer"].run.args)
    declared = production["explainer"].spec["containers"][0]["args"]
    assert args[: len(declared)] == declared
    assert args[len(declared) :] == ["--model_name", deploy.SERVICE, "--http_port", "8080"]
    cmdline = _exec(stack["explainer"].name, "tr '\\0' ' ' < /proc/1/cmdline").stdout
    assert cmdline.split()[-4:] == ["--model_name", deploy.SERVICE, "--http_port", "8080"]


def test_the_translation_recorded_what_it_does_not_reproduce(stack: dict[str, Server]) -> None:
    notes = stack["predictor"].run.not_reproduced
    assert any(key.endswith(".logger") for key in notes)  # the agent's events: posted above
    assert any(key.endswith("serviceAccountName") for key in notes)


def test_the_predictor_serves_from_a_state_directory_mounted_read_only_elsewhere(
    images: Images,
    registry_state: Path,
    host_predictor: str,
    example_body: dict[str, Any],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The image's own contract, without the manifests: ``serve-one predictor`` as uid 10001,
    read-only root, /tmp its only writable path, no capabilities, and the state directory (a
    copy of the session's registry, root-owned as the pipeline left it) mounted read-only at
    another path with ``HMLOPS_STATE_DIR`` pointing at it. The registry records its artifacts
    under the path it was written at; they are found under the mount, the load writes nothing
    into it, and the local logs go to /tmp, said in the log."""
    state = tmp_path / "state"
    shutil.copytree(registry_state, state, ignore=shutil.ignore_patterns("*.sqlite*", "*.jsonl"))
    state.chmod(0o755)  # as the pipeline makes it (pytest makes its temporary directories 0700)
    name = f"hmlops-contract-{os.getpid()}"
    port = _free_port()
    request.addfinalizer(lambda: podman("rm", "--force", "--ignore", name, check=False))
    podman(
        "run", "--detach", "--name", name, "--user", f"{UID}:{UID}", "--read-only",
        "--read-only-tmpfs=false", "--tmpfs", "/tmp:rw,size=1g", "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--network", NETWORK,
        "--publish", f"127.0.0.1:{port}:{port}",
        "--volume", f"{state}:/mnt/hmlops-state:ro", "--env", "HMLOPS_STATE_DIR=/mnt/hmlops-state",
        "--env", f"HMLOPS_HMAC_KEY={TEST_KEY}",
        images.serving, "serve-one", "predictor", "--model", f"{MODEL}@champion",
        "--port", str(port), "--bind", "0.0.0.0",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        status, code = _state(name)
        assert status == "running", f"{status} with {code}:\n{_logs(name)}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                break
        assert time.monotonic() < deadline, f"not ready in {READY_TIMEOUT:.0f} s:\n{_logs(name)}"
        time.sleep(0.5)
    ours = _predict(base, example_body["instances"])
    theirs = _predict(host_predictor, example_body["instances"])
    assert [a["risk"] for a in ours] == [a["risk"] for a in theirs]
    logs = _logs(name, tail=-1, keep=None)
    assert "the state directory /mnt/hmlops-state is read-only for this process" in logs
    assert "predictions.sqlite" in _exec(name, "ls /tmp/hmlops-state").stdout.split()
    assert _exec(name, "id -u").stdout.strip() == str(UID)
    assert sorted(p.name for p in state.iterdir()) == sorted(
        p.name for p in registry_state.iterdir() if not p.name.endswith((".sqlite", ".jsonl"))
    )  # nothing was written into the mounted state directory
