"""``hmlops pipeline submit`` against a recording fake of the KFP v2beta1 REST API on 127.0.0.1.

The fake answers what kfp.Client 2.17 calls (healthz, experiments list/create, runs create) and
records every request; the tests check the order of the calls and that each body deserializes
strictly into its ``kfp_server_api`` model. Failures (a closed port, a silent port, 401, 403,
a KFP error JSON) must come back as one ``hmlops: error:`` line, exit 1, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kfp
import kfp_server_api
import pytest
from google.protobuf import json_format

from hospital_mlops.cli.main import build_parser, run_captured
from pipelines import runner as kfp_runner
from pipelines.runner import PipelineSubmitError, compile_pipeline, submit, validate_ir

API = "/apis/v2beta1"
TOKEN = "test-token-0123456789"
RUNNER_SA = "hmlops-pipeline-runner"  # the CLI's --service-account default


# ---- a strict check of a JSON body against a kfp_server_api model ------------------------------


class StrictModelError(AssertionError):
    pass


def check_model(data: Any, model: str, where: str = "$") -> None:
    """``data`` must be exactly the JSON of ``kfp_server_api.models.<model>``: no unknown keys,
    no nulls, every value of the declared type (nested models and enums included)."""
    klass = getattr(kfp_server_api.models, model, None)
    if klass is None:
        raise StrictModelError(f"{where}: no model {model} in kfp_server_api")
    if not klass.openapi_types and hasattr(klass, "allowable_values"):  # an enum
        if data not in klass.allowable_values:
            raise StrictModelError(f"{where}: {data!r} is not one of {klass.allowable_values}")
        return
    if not isinstance(data, dict):
        raise StrictModelError(f"{where}: {model} must be an object, got {type(data).__name__}")
    attribute_of = {key: attr for attr, key in klass.attribute_map.items()}
    unknown = sorted(set(data) - set(attribute_of))
    if unknown:
        raise StrictModelError(f"{where}: unknown key(s) {unknown} for {model}")
    for key, value in data.items():
        check_type(value, klass.openapi_types[attribute_of[key]], f"{where}.{key}")


PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "bool": (bool,),
    "int": (int,),
    "float": (int, float),
    "object": (dict, list, str, int, float, bool),
}


def check_type(value: Any, declared: str, where: str) -> None:
    if value is None:
        raise StrictModelError(f"{where}: null where {declared} is declared")
    if declared.startswith("list["):
        if not isinstance(value, list):
            raise StrictModelError(f"{where}: expected a list, got {type(value).__name__}")
        for i, item in enumerate(value):
            check_type(item, declared[5:-1], f"{where}[{i}]")
    elif declared.startswith("dict("):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise StrictModelError(f"{where}: expected an object with string keys")
        inner = declared[len("dict(str, ") : -1]
        for k, item in value.items():
            check_type(item, inner, f"{where}.{k}")
    elif declared == "datetime":
        try:
            datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise StrictModelError(f"{where}: {value!r} is not a timestamp") from None
    elif declared in PRIMITIVES:
        wrong_bool = isinstance(value, bool) and declared in ("int", "float")
        if not isinstance(value, PRIMITIVES[declared]) or wrong_bool:
            raise StrictModelError(f"{where}: expected {declared}, got {type(value).__name__}")
    else:
        check_model(value, declared, where)


def deserialize(data: Any, model: str) -> Any:
    """The generated client's own deserializer, as a second opinion on the body."""
    response = types.SimpleNamespace(data=json.dumps(data))
    return kfp_server_api.ApiClient().deserialize(response, model)


def test_the_strict_checker_refuses_unknown_keys_wrong_types_and_bad_enums() -> None:
    check_model({"display_name": "x", "storage_state": "AVAILABLE"}, "V2beta1Experiment")
    with pytest.raises(StrictModelError, match=r"unknown key\(s\) \['displayName'\]"):
        check_model({"displayName": "x"}, "V2beta1Experiment")
    with pytest.raises(StrictModelError, match=r"\$\.display_name: expected str"):
        check_model({"display_name": 3}, "V2beta1Experiment")
    with pytest.raises(StrictModelError, match="not one of"):
        check_model({"storage_state": "GONE"}, "V2beta1Experiment")
    with pytest.raises(StrictModelError, match=r"runtime_config: unknown key\(s\) \['params'\]"):
        check_model({"runtime_config": {"params": {}}}, "V2beta1Run")
    with pytest.raises(StrictModelError, match="null"):
        check_model({"service_account": None}, "V2beta1Run")


# ---- the recording fake KFP API ----------------------------------------------------------------


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None


@dataclass
class FakeKfp:
    url: str
    calls: list[Call] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    deny: int | None = None  # answer every request with this status (401, 403)
    fail: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def routes(self) -> list[tuple[str, str]]:
        return [(c.method, c.path) for c in self.calls]


def kfp_error(status: int, message: str) -> dict[str, Any]:
    """What the KFP API server answers on error (grpc-gateway's Status JSON)."""
    return {"error": message, "code": {400: 3, 401: 16, 403: 7, 404: 5}.get(status, 13),
            "message": message, "details": []}  # fmt: skip


def make_handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            call = Call(
                self.command,
                split.path,
                parse_qs(split.query, keep_blank_values=True),
                {k.lower(): v for k, v in self.headers.items()},
                json.loads(raw) if raw else None,
            )
            fake.calls.append(call)
            if fake.deny:
                reason = "Unauthorized" if fake.deny == 401 else "Forbidden"
                return self._answer(fake.deny, kfp_error(fake.deny, f"fake KFP: {reason}"))
            if (self.command, split.path) in fake.fail:
                return self._answer(*fake.fail[(self.command, split.path)])
            route = (self.command, split.path)
            if route == ("GET", f"{API}/healthz"):
                return self._answer(200, {"multi_user": False, "pipeline_store": "database"})
            if route == ("GET", f"{API}/experiments"):
                wanted = json.loads(call.query["filter"][0])["predicates"][0]["stringValue"]
                found = [e for e in fake.experiments if e["display_name"] == wanted]
                return self._answer(200, {"experiments": found, "total_size": len(found)}
                                    if found else {})  # fmt: skip
            if route == ("POST", f"{API}/experiments"):
                experiment = {
                    **call.body,
                    "experiment_id": f"exp-{len(fake.experiments) + 1}",
                    "created_at": "2025-01-02T03:04:05Z",
                    "storage_state": "AVAILABLE",
                }
                fake.experiments.append(experiment)
                return self._answer(200, experiment)
            if route == ("POST", f"{API}/runs"):
                run = {
                    **call.body,
                    "run_id": "kfp-run-0001",
                    "state": "PENDING",
                    "created_at": "2025-01-02T03:04:06Z",
                    "storage_state": "AVAILABLE",
                }
                return self._answer(200, run)
            return self._answer(404, kfp_error(404, f"fake KFP: no route {route}"))

        do_GET = do_POST = do_DELETE = _handle

    return Handler


@pytest.fixture
def fake_kfp() -> Iterator[FakeKfp]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    fake = FakeKfp(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = make_handler(fake)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture(autouse=True)
def no_kfp_context(tmp_path, monkeypatch) -> Path:
    """kfp.Client reads namespace and cookies from ~/.config/kfp/context.json: keep the user's
    out of the tests."""
    path = tmp_path / "kfp-context.json"
    monkeypatch.setattr(kfp.Client, "_LOCAL_KFP_CONTEXT", str(path))
    return path


@pytest.fixture
def token_file(tmp_path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port bound on 127.0.0.1 but not listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def submit_args(host: str, *extra: str) -> Any:
    return build_parser().parse_args(["pipeline", "submit", "--host", host, *extra])


def hmlops_subprocess(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    """The CLI in its own interpreter: what a user sees, warnings and logging included."""
    env = {**os.environ, "HOME": str(tmp_path)}  # no user kfp context file
    return subprocess.run(
        [sys.executable, "-c", "import sys; from hospital_mlops.cli.main import main; "
         "sys.exit(main(sys.argv[1:]))", *argv],
        capture_output=True, text=True, env=env, timeout=90,  # bounded: no retry loop
    )  # fmt: skip


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("hmlops: error: "), err
    return lines[0]


# ---- the happy path ----------------------------------------------------------------------------


def expected_pipeline_spec(tmp_path: Path) -> dict[str, Any]:
    parsed = validate_ir(compile_pipeline(tmp_path / "expected.yaml"))
    return {
        "pipeline_spec": json_format.MessageToDict(parsed["pipeline"]),
        "platform_spec": json_format.MessageToDict(parsed["platform"]),
    }


def test_submit_calls_health_then_experiment_then_run_with_strict_bodies(
    fake_kfp, token_file, tmp_path
) -> None:
    code, out, err = run_captured(
        ["pipeline", "submit", "--host", fake_kfp.url, "--token-file", str(token_file),
         "--input", "/data/extracts/d130"]
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out)  # stdout is the JSON result alone; kfp's links went to stderr
    assert result["kfp_run_id"] == "kfp-run-0001" and result["host"] == fake_kfp.url
    run_id = result["run_id"]
    assert run_id.startswith("run-")
    assert "Run details:" in err and "Traceback" not in err

    # our quick probe, kfp.Client's own health check, get-or-create the experiment, create run;
    # no pipeline upload: the client sends the IR inline with the run
    assert fake_kfp.routes() == [
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/healthz"),
        ("GET", f"{API}/experiments"),
        ("POST", f"{API}/experiments"),
        ("POST", f"{API}/runs"),
    ]
    assert all(c.headers.get("authorization") == f"Bearer {TOKEN}" for c in fake_kfp.calls)

    lookup = fake_kfp.calls[2]
    predicate = json.loads(lookup.query["filter"][0])["predicates"][0]
    assert predicate["key"] == "display_name" and predicate["stringValue"] == "hospital-data"

    experiment = fake_kfp.calls[3].body
    check_model(experiment, "V2beta1Experiment")
    assert experiment["display_name"] == "hospital-data"

    run = fake_kfp.calls[4].body
    check_model(run, "V2beta1Run")
    model = deserialize(run, "V2beta1Run")
    assert isinstance(model, kfp_server_api.V2beta1Run)
    assert model.experiment_id == "exp-1"
    assert model.display_name == run_id
    assert model.service_account == RUNNER_SA
    assert model.runtime_config.parameters == {
        "run_id": run_id,
        "source": "diabetes130",
        "use": "readmission_risk_model",
        "extract": "/data/extracts/d130",
    }
    assert model.pipeline_version_reference is None  # inline spec, not an uploaded pipeline
    assert run["pipeline_spec"] == expected_pipeline_spec(tmp_path)
    assert run["pipeline_spec"]["pipeline_spec"]["pipelineInfo"]["name"] == "hospital-data-pipeline"


def test_a_chosen_use_case_is_sent_as_a_run_parameter(fake_kfp, token_file) -> None:
    code, _, err = run_captured(
        ["pipeline", "submit", "--host", fake_kfp.url, "--token-file", str(token_file),
         "--input", "/data/extracts/d130", "--use-case", "post_acute_at_admission"]
    )  # fmt: skip
    assert code == 0, err
    run = deserialize(fake_kfp.calls[-1].body, "V2beta1Run")
    assert run.runtime_config.parameters["use_case"] == "post_acute_at_admission"


def test_an_existing_experiment_is_reused_and_the_service_account_is_passed_through(
    fake_kfp, tmp_path
) -> None:
    fake_kfp.experiments.append(
        {"experiment_id": "exp-42", "display_name": "hospital-data-ci",
         "storage_state": "AVAILABLE"}
    )  # fmt: skip
    result = submit(
        submit_args(fake_kfp.url, "--experiment", "hospital-data-ci", "--service-account", "sa-x")
    )
    assert set(result) == {"run_id", "kfp_run_id", "host"}
    assert ("POST", f"{API}/experiments") not in fake_kfp.routes()
    assert fake_kfp.routes()[-1] == ("POST", f"{API}/runs")
    run = fake_kfp.calls[-1].body
    check_model(run, "V2beta1Run")
    assert run["experiment_id"] == "exp-42" and run["service_account"] == "sa-x"
    assert all("authorization" not in c.headers for c in fake_kfp.calls)  # no token given


def test_cookies_from_the_kfp_context_reach_the_probe_and_the_client(
    fake_kfp, no_kfp_context
) -> None:
    no_kfp_context.write_text(
        json.dumps({"namespace": "", "client_authentication_cookie": "authservice=abc"})
    )
    submit(submit_args(fake_kfp.url))
    assert len(fake_kfp.calls) == 5
    assert all(c.headers.get("cookie") == "authservice=abc" for c in fake_kfp.calls)


# ---- failures: one line, exit 1, no traceback --------------------------------------------------


def test_an_unreachable_host_fails_fast_with_one_line(closed_port, tmp_path) -> None:
    host = f"http://127.0.0.1:{closed_port}"
    proc = hmlops_subprocess(tmp_path, "pipeline", "submit", "--host", host)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert line == (
        f"hmlops: error: cannot reach the Kubeflow Pipelines host {host}: connection refused"
    )


def test_an_unreachable_host_raises_the_typed_error(closed_port) -> None:
    with pytest.raises(PipelineSubmitError, match="connection refused"):
        submit(submit_args(f"http://127.0.0.1:{closed_port}"))


@pytest.mark.timeout(60)  # kfp.Client alone would wait forever: fail, don't hang the suite
def test_a_host_that_never_answers_times_out(monkeypatch) -> None:
    monkeypatch.setattr(kfp_runner, "PROBE_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        host = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with pytest.raises(PipelineSubmitError) as caught:
            submit(submit_args(host))
    assert str(caught.value) == (
        f"cannot reach the Kubeflow Pipelines host {host}: no answer within 0.5s"
    )


@pytest.mark.parametrize(
    ("status", "says"),
    [(401, "refused authentication"), (403, "refused authorization")],
)
def test_a_refusing_host_names_the_refusal_and_how_to_pass_credentials(
    fake_kfp, status, says
) -> None:
    fake_kfp.deny = status
    code, out, err = run_captured(["pipeline", "submit", "--host", fake_kfp.url])
    assert code == 1 and out == ""
    line = one_error_line(err)
    assert f"host {fake_kfp.url} {says} at health check (HTTP {status}: fake KFP: " in line
    assert "--token-file" in line
    assert fake_kfp.routes() == [("GET", f"{API}/healthz")]  # stopped at the probe, no retries


def test_a_rejected_run_reports_the_step_status_and_server_message(fake_kfp, tmp_path) -> None:
    message = "Invalid input error: runtime_config.parameters: unknown parameter 'extract'"
    fake_kfp.fail[("POST", f"{API}/runs")] = (400, kfp_error(400, message))
    proc = hmlops_subprocess(tmp_path, "pipeline", "submit", "--host", fake_kfp.url)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    line = one_error_line(proc.stderr)
    assert line == (
        f"hmlops: error: the Kubeflow Pipelines host {fake_kfp.url} rejected create run: "
        f"HTTP 400: {message}"
    )


def test_a_failing_health_check_and_experiment_step_are_named(fake_kfp) -> None:
    fake_kfp.fail[("GET", f"{API}/healthz")] = (503, kfp_error(503, "database unavailable"))
    with pytest.raises(PipelineSubmitError) as caught:
        submit(submit_args(fake_kfp.url))
    assert str(caught.value).endswith("rejected health check: HTTP 503: database unavailable")

    del fake_kfp.fail[("GET", f"{API}/healthz")]
    fake_kfp.fail[("POST", f"{API}/experiments")] = (500, {"error": "quota exceeded"})
    with pytest.raises(PipelineSubmitError) as caught:
        submit(submit_args(fake_kfp.url))
    assert str(caught.value).endswith(
        "rejected get or create experiment 'hospital-data': HTTP 500: quota exceeded"
    )
    assert ("POST", f"{API}/runs") not in fake_kfp.routes()


def test_a_missing_token_file_is_one_clear_line(tmp_path) -> None:
    code, _, err = run_captured(
        ["pipeline", "submit", "--host", "http://127.0.0.1:9", "--token-file",
         str(tmp_path / "absent")]
    )  # fmt: skip
    assert code == 1
    absent = tmp_path / "absent"
    assert one_error_line(err) == (
        f"hmlops: error: cannot read the token file {absent}: No such file or directory"
    )
