"""`hmlops serve`: the registered champion behind three real kserve.ModelServer processes on
127.0.0.1 (predictor P, explainer P+1, drift detector P+2), as a user starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.governance.phi_scan import raw_identifiers, scan, scan_database
from tests.conftest import TEST_KEY
from tests.integration.conftest import HMLOPS, free_port_base, hmlops

CONTRACT = {
    "risk", "band", "alert", "reasons", "missing_inputs", "model_version", "prediction_id",
    "limitations",
}  # fmt: skip


@pytest.fixture(scope="module")
def example_body(d130_champion) -> dict:
    proc = hmlops("serve", "--print-example-request")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def stores(module_store_backend, module_new_store_url):
    """The prediction log and drift results the stack writes: the state directory's SQLite
    files by default; PostgreSQL databases named by the environment, as on a cluster."""
    with pytest.MonkeyPatch.context() as patch:
        if module_store_backend == "sqlite":
            patch.delenv("HMLOPS_PREDICTION_LOG_URL", raising=False)
            patch.delenv("HMLOPS_DRIFT_DB_URL", raising=False)
            yield None
            return
        urls = {"log": module_new_store_url("predictions"), "drift": module_new_store_url("drift")}
        patch.setenv("HMLOPS_PREDICTION_LOG_URL", urls["log"])
        patch.setenv("HMLOPS_DRIFT_DB_URL", urls["drift"])
        yield urls


@pytest.fixture(scope="module")
def stack(d130_champion, stores):
    base = free_port_base()
    server = subprocess.Popen(
        [*HMLOPS, "serve", "--model", "readmission-30d@champion", "--port-base", str(base)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HMLOPS_HMAC_KEY": TEST_KEY},
        # as a shell starting it in the background would: Ctrl-C must still stop the stack
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    urls = {name: f"http://127.0.0.1:{base + i}" for i, name in enumerate(("p", "e", "d"))}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"hmlops serve exited: {server.stderr.read()[-3000:]}")
        try:
            if all(httpx.get(f"{u}/v2/health/ready").status_code == 200 for u in urls.values()):
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the stack never became ready")
    yield server, urls
    if server.poll() is None:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)


def test_the_three_servers_answer_on_loopback_only(stack) -> None:
    import psutil

    _, urls = stack
    ports = {int(url.rsplit(":", 1)[1]) for url in urls.values()}
    for url in urls.values():
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    listening = {
        (c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port in ports
    }
    assert listening == {("127.0.0.1", port) for port in ports}


def test_v1_and_v2_answer_the_clinical_question(stack, example_body, d130_champion) -> None:
    _, urls = stack
    answer = httpx.post(f"{urls['p']}/v1/models/readmission:predict", json=example_body)
    assert answer.status_code == 200, answer.text
    [prediction] = answer.json()["predictions"]
    assert set(prediction) >= CONTRACT
    assert prediction["model_version"] == f"readmission-30d/{d130_champion}"
    assert 0 < prediction["risk"] < 1 and prediction["band"] in ("low", "moderate", "high")
    assert all({"feature", "text", "contribution"} == set(r) for r in prediction["reasons"])
    instance = example_body["instances"][0]
    tensors = [  # an input the encounter lacks is an omitted tensor (OIP has no null)
        {
            "name": name,
            "datatype": "BYTES" if isinstance(value, str) else "INT64",
            "shape": [1],
            "data": [value],
        }
        for name, value in instance.items()
        if value is not None
    ]
    v2 = httpx.post(f"{urls['p']}/v2/models/readmission/infer", json={"inputs": tensors})
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert outputs["risk"] == [prediction["risk"]]  # one scoring core for both protocols
    assert json.loads(outputs["reasons"][0]) == prediction["reasons"]


def test_bad_requests_are_400s_naming_the_field(stack, example_body) -> None:
    _, urls = stack
    bad = dict(example_body["instances"][0], time_in_hospital=99)
    answer = httpx.post(f"{urls['p']}/v1/models/readmission:predict", json={"instances": [bad]})
    assert answer.status_code == 400
    errors = json.loads(answer.json()["error"])["errors"]
    assert errors[0]["field"] == "time_in_hospital" and "plausible range" in errors[0]["message"]
    no_type = httpx.post(f"{urls['p']}/v2/models/readmission/infer", content=b'{"inputs": []}')
    assert no_type.status_code == 415 and "content-type" in no_type.text
    huge = httpx.post(
        f"{urls['p']}/v1/models/readmission:predict", content=b"[" + b"1," * 600_000 + b"1]"
    )
    assert huge.status_code == 413


def test_the_predictor_exports_the_series_the_rollout_gates_read(
    stack, example_body, d130_champion
) -> None:
    from hospital_mlops.rollout.observe import parse_service_metrics

    _, urls = stack

    def scrape():
        text = httpx.get(f"{urls['p']}/metrics").text
        return parse_service_metrics([text], "readmission-30d", d130_champion)

    before = scrape()
    for _ in range(3):
        ok = httpx.post(f"{urls['p']}/v1/models/readmission:predict", json=example_body)
        assert ok.status_code == 200
    bad = dict(example_body["instances"][0], time_in_hospital=99)
    assert (
        httpx.post(
            f"{urls['p']}/v1/models/readmission:predict", json={"instances": [bad]}
        ).status_code
        == 400
    )
    moved = scrape().since(before)
    assert moved.counts == {"ok": 3, "invalid": 1, "error": 0}
    assert moved.error_rate == 0.0
    assert 0 < moved.latency_quantile_ms(0.99) < 1000


def test_an_explanation_in_both_views(stack, example_body) -> None:
    _, urls = stack
    clinician = httpx.post(
        f"{urls['e']}/v1/models/readmission:explain", json=example_body, timeout=60
    )
    assert clinician.status_code == 200, clinician.text
    technical = httpx.post(
        f"{urls['e']}/v1/models/readmission:explain",
        json={**example_body, "view": "technical"},
        timeout=120,
    )
    assert technical.status_code == 200, technical.text


def test_the_detector_tests_a_window_of_the_predictors_events(stack) -> None:
    """1,100 real test-period encounters scored in batches of 100: the predictor's logger
    events fill one window of 1,000 inside the intended use (deaths and hospice discharges are
    left out and counted), which the detector tests against the validated period's reference."""
    from hospital_mlops.features import diabetes130_out_of_cohort_row
    from hospital_mlops.inference.registered_examples import registered_examples

    _, urls = stack
    # the store keeps the version's last result across restarts: wait for a new one
    before = httpx.get(f"{urls['d']}/drift/latest").json()
    encounters = registered_examples("readmission-30d", "champion", n=1100, seed=3)
    assert not any(diabetes130_out_of_cohort_row(e) for e in encounters)  # the model's cohort
    # an EHR also sends deaths and hospice discharges (about 3% of the extract): 50 of them
    for e in encounters[::22]:
        e["discharge_disposition_id"] = 11  # expired
    outside = sum(diabetes130_out_of_cohort_row(e) for e in encounters)
    assert outside == 50  # and 1,050 inside the intended use fill the window of 1,000
    for start in range(0, 1100, 100):
        answer = httpx.post(
            f"{urls['p']}/v1/models/readmission:predict",
            json={"instances": encounters[start : start + 100]},
            timeout=60,
        )
        assert answer.status_code == 200
    deadline = time.monotonic() + 90
    latest: dict = {}
    while time.monotonic() < deadline:
        latest = httpx.get(f"{urls['d']}/drift/latest").json()
        if latest.get("status") == "tested" and latest.get("window_id") != before.get("window_id"):
            break
        time.sleep(0.5)
    assert latest.get("status") == "tested", latest
    left_out = latest["rows_outside_intended_use"] - before["rows_outside_intended_use"]
    assert left_out == outside
    assert latest["window_size"] == 1000 and isinstance(latest["is_drift"], bool)
    assert set(latest["feature_p_values"]) >= {"age_years", "inpatient_admissions_prior_year"}
    assert 0 <= latest["score_p_value"] <= 1
    metrics = httpx.get(f"{urls['d']}/metrics").text
    tested = [
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith("hmlops_drift_windows_tested_total ")
    ]
    assert tested and tested[0] >= 1
    assert 'hmlops_drift_feature_p_value{feature="age_years"}' in metrics


def test_a_prediction_walks_back_to_its_source_extract(stack, example_body, d130_runs) -> None:
    from tests.integration.test_pipeline_kfp import D130_EXTRACT_SHA

    out = d130_runs[0]
    _, urls = stack
    answer = httpx.post(f"{urls['p']}/v1/models/readmission:predict", json=example_body)
    prediction_id = answer.json()["predictions"][0]["prediction_id"]
    chain: list = []
    for _ in range(20):  # the prediction log is written in the background
        proc = hmlops("lineage", prediction_id, "--out", str(out), "--json")
        if proc.returncode == 0:
            chain = json.loads(proc.stdout)
            break
        time.sleep(0.25)
    assert chain, proc.stderr
    assert chain[0]["kind"] == "prediction" and chain[0]["prediction_id"] == prediction_id
    assert chain[0]["inputs"] == example_body["instances"][0]
    kinds = [n["kind"] for n in chain]
    assert kinds[:6] == ["prediction", "model", "features", "normalized", "raw", "source_extract"]
    assert chain[5]["sha256"] == D130_EXTRACT_SHA and "split" in kinds
    missing = hmlops("lineage", "00000000-0000-4000-8000-000000000000", "--out", str(out))
    assert missing.returncode == 2 and "no prediction" in missing.stderr


def test_no_raw_identifier_reaches_the_prediction_log_or_server_logs(
    stack, stores, example_body, catalog, d130_full
) -> None:
    _, urls = stack
    answer = httpx.post(f"{urls['p']}/v1/models/readmission:predict", json=example_body)
    assert answer.status_code == 200  # at least this prediction is logged and scanned
    raw = read_extract(d130_full, catalog.source("diabetes130"))["encounters"]
    ids = raw_identifiers(raw["encounter_id"]) | raw_identifiers(raw["patient_nbr"])
    state = Path(os.environ["HMLOPS_STATE_DIR"])
    if stores is None:
        assert (state / "predictions.sqlite").exists()
    else:
        from hospital_mlops.inference.prediction_log import PredictionLog

        log = PredictionLog(stores["log"])
        deadline = time.monotonic() + 20  # written by the predictor's writer process
        while log.count() == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.count() > 0  # the scan below reads real rows
        assert scan_database(stores["log"], ids) == [] and scan_database(stores["drift"], ids) == []
    assert scan(state, ids) == []


# --- property-based abuse: malformed and adversarial bodies never produce a 5xx ---------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
    | st.sampled_from(["", "\u202e", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "' OR 1=1 --", "\x00", "1e309", "[70-80)"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999"]


@st.composite
def instance_bodies(draw: st.DrawFn, valid: dict) -> bytes:
    """A real instance, broken one way or several: the shapes a buggy or hostile client sends."""
    instance = dict(valid)
    kind = draw(st.sampled_from(["value", "drop", "extra", "batch", "body", "non_finite", "bytes"]))
    if kind == "value":
        for name in draw(st.lists(st.sampled_from(sorted(instance)), min_size=1, max_size=3)):
            instance[name] = draw(JSON_VALUES)
    elif kind == "drop":
        for name in draw(st.lists(st.sampled_from(sorted(instance)), min_size=1, max_size=5)):
            instance.pop(name, None)
    elif kind == "extra":
        instance[draw(st.text(min_size=1, max_size=30))] = draw(JSON_VALUES)
    elif kind == "batch":
        return json.dumps({"instances": [instance] * draw(st.integers(101, 400))}).encode()
    elif kind == "body":
        return json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "non_finite":
        name = draw(st.sampled_from(["time_in_hospital", "num_medications", "number_inpatient"]))
        text = json.dumps({"instances": [{**instance, name: 12345}]}).encode()
        return text.replace(b"12345", draw(st.sampled_from(NON_FINITE)))
    else:
        return draw(st.binary(max_size=300))
    return json.dumps({"instances": [instance]}).encode()


@st.composite
def v2_bodies(draw: st.DrawFn, valid: dict) -> bytes:
    tensors = [
        {
            "name": name,
            "datatype": "BYTES" if isinstance(v, str) or v is None else "INT64",
            "shape": [1],
            "data": [v],
        }
        for name, v in valid.items()
    ]
    kind = draw(st.sampled_from(["tensor", "shape", "type", "drop", "body"]))
    i = draw(st.integers(0, len(tensors) - 1))
    if kind == "tensor":
        tensors[i]["data"] = draw(JSON_VALUES)
    elif kind == "shape":
        tensors[i]["shape"] = draw(JSON_VALUES)
    elif kind == "type":
        tensors[i]["datatype"] = draw(st.sampled_from(["FP16", "BOOL", "UINT8", "", "STRING"]))
    elif kind == "drop":
        tensors.pop(i)
    else:
        return json.dumps(draw(JSON_VALUES)).encode()
    return json.dumps({"inputs": tensors}).encode()


@st.composite
def cloud_events(draw: st.DrawFn, valid: dict) -> tuple[dict, bytes]:
    from hospital_mlops.drift.inference_events import binary_headers

    headers = binary_headers(
        draw(st.uuids()).hex, draw(st.sampled_from(["request", "response"])), "readmission"
    )
    kind = draw(st.sampled_from(["header", "drop", "body", "bytes"]))
    if kind == "header":
        name = draw(st.sampled_from(sorted(headers)))
        headers[name] = draw(
            st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=40)
        )
    elif kind == "drop":
        headers.pop(draw(st.sampled_from(sorted(headers))))
    if kind == "bytes":
        return headers, draw(st.binary(max_size=300))
    if kind == "body":
        return headers, json.dumps(draw(JSON_VALUES)).encode()
    return headers, json.dumps({"instances": [valid]}).encode()


def _assert_client_error_named(answer: httpx.Response) -> None:
    assert answer.status_code < 500, (answer.status_code, answer.text[:500])
    if answer.status_code >= 400:
        text = answer.text
        assert '\\"field\\"' in text or '"field"' in text or '"loc"' in text, text[:500]
        assert "Traceback" not in text


JSON_HEADER = {"content-type": "application/json"}
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _with_json_header(bodies: st.SearchStrategy[bytes]) -> st.SearchStrategy[tuple[dict, bytes]]:
    return bodies.map(lambda body: (JSON_HEADER, body))


# (server, path, strategy over a valid instance, examples): 5,100 bodies in all.
FUZZ_TARGETS = [
    ("p", "/v1/models/readmission:predict", lambda v: _with_json_header(instance_bodies(v)), 2000),
    ("p", "/v2/models/readmission/infer", lambda v: _with_json_header(v2_bodies(v)), 1500),
    ("e", "/v1/models/readmission:explain", lambda v: _with_json_header(instance_bodies(v)), 800),
    ("d", "/", cloud_events, 800),  # invalid inference-logger CloudEvents
]


@pytest.mark.parametrize(("server", "path", "strategy", "examples"), FUZZ_TARGETS)
def test_fuzzed_bodies_never_get_a_5xx(stack, example_body, server, path, strategy, examples):
    _, urls = stack
    with httpx.Client(timeout=60) as client:

        @settings(FUZZ, max_examples=examples)
        @given(request=strategy(example_body["instances"][0]))
        def run(request: tuple[dict, bytes]) -> None:
            headers, body = request
            _assert_client_error_named(
                client.post(f"{urls[server]}{path}", content=body, headers=headers)
            )

        run()


def test_the_demo_posts_an_encounter_discharge_call_and_prints_the_card(
    stack, tmp_path, capsys
) -> None:
    """`make demo`'s CDS step: `hmlops cds serve` as a real process against the stack's
    predictor, one call built from example FHIR data, the card printed."""
    from hospital_mlops.cli.serving import demo_cds_card

    _, urls = stack
    demo_cds_card(urls["p"], free_port_base(1), tmp_path)
    header, _, body = capsys.readouterr().out.partition("the card:\n")
    assert "HTTP 200" in header, header
    body, _, feedback = body.partition("\nfeedback: ")
    (card,) = json.loads(body)["cards"]
    # then the clinician's override, through the spec's feedback endpoint with the EHR's JWT
    assert feedback.startswith("the clinician overrode the card (")
    assert 'HTTP 200 {"recorded":1,"replayed":0}' in feedback
    assert card["summary"].startswith("30-day readmission risk ") and len(card["summary"]) <= 140
    assert "readmission-30d/1" in card["detail"]  # the champion the stack serves answered
    # the calibration band comes from the served version's registered test-period evidence
    assert "of 100 similar patients in the validation period" in card["detail"]
    assert "GET /cds-services" in (tmp_path / "cds.log").read_text()


def test_ctrl_c_stops_all_three(stack) -> None:
    server, urls = stack
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)
    for url in urls.values():
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/v2/health/ready", timeout=2)


def test_a_changed_model_artifact_is_never_served(d130_runs) -> None:
    """Append a byte to the registered model's files in the store: predictions are unchanged
    (golden rows still pass) but the sha256 no longer matches, so the predictor refuses to
    start. (A load copies the artifacts out of the local store: the store's own file is
    changed here, where the registry keeps it.)"""
    from urllib.parse import urlparse

    from hospital_mlops.governance import registry

    _, _, second, _, _ = d130_runs
    version = str(second["model"]["version"])
    stored = urlparse(registry.client().get_model_version_download_uri("readmission-30d", version))
    [model_json] = Path(stored.path).rglob("risk_model/model.json")
    original = model_json.read_bytes()
    model_json.write_bytes(original + b"\n")
    try:
        proc = hmlops(
            "serve-one", "predictor", "--model", f"readmission-30d@{version}",
            "--port", str(free_port_base(1)),
        )  # fmt: skip
    finally:
        model_json.write_bytes(original)
    assert proc.returncode == 1
    assert "ArtifactMismatch" in proc.stderr and "changed after registration" in proc.stderr


def test_a_storage_path_bundle_serves_the_same_answers_and_refuses_changes(
    d130_champion, example_body, tmp_path
) -> None:
    """`registry export` writes what KServe's storage initializer would copy to /mnt/models;
    the predictor serves it without the registry, and only if it verifies."""
    import asyncio
    import shutil

    from serving.predictor import RiskPredictor

    bundle = tmp_path / "bundle"
    exported = hmlops(
        "registry", "export", "--model", "readmission-30d@champion", "--out", str(bundle)
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    sha = next(w for w in exported.stdout.split() if len(w) == 64)
    from_registry = RiskPredictor("readmission", "readmission-30d", "champion")
    from_bundle = RiskPredictor("readmission", str(bundle), "path", expected_sha256=sha)
    assert from_registry.load() and from_bundle.load(), from_bundle.not_ready_reason
    ask = example_body["instances"]
    risk = [
        asyncio.run(p.predict({"instances": ask}))["predictions"][0]["risk"]
        for p in (from_registry, from_bundle)
    ]
    assert risk[0] == risk[1]
    assert from_bundle.version == d130_champion
    for p in (from_registry, from_bundle):
        p.stop()
    # a pinned sha256 the bundle does not have, and a changed file: never ready
    pinned = RiskPredictor("readmission", str(bundle), "path", expected_sha256="0" * 64)
    assert not pinned.load() and "the deployment expects" in pinned.not_ready_reason
    changed = tmp_path / "changed"
    shutil.copytree(bundle, changed)
    (changed / "risk_model" / "calibration.json").write_text(
        (bundle / "risk_model" / "calibration.json").read_text() + " "
    )
    refused = hmlops(
        "serve-one", "predictor", "--model", str(changed), "--port", str(free_port_base(1))
    )
    assert refused.returncode == 1 and "changed after export" in refused.stderr
    again = hmlops(
        "registry", "export", "--model", "readmission-30d@champion", "--out", str(bundle)
    )
    assert again.returncode == 2 and "already exists" in again.stderr
