"""Open Inference Protocol v2 conformance of the predictor (issue 23): a real
``kserve.ModelServer`` process serving the registered champion, every exchange (infer,
metadata, health, errors) validated against the protocol's own OpenAPI document with
``openapi-core`` (tests/oip.py), and KServe's reference client ``InferenceRESTClient`` talking
to it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests

from hospital_mlops.model.scoring import MISSING_ROWS, V2_OUTPUTS
from tests.conftest import TEST_KEY
from tests.integration.conftest import HMLOPS, free_port_base, hmlops
from tests.oip import check_exchange, nulls

MODEL = "readmission-30d"
SERVED = "readmission"


@pytest.fixture(scope="module")
def instance(d130_champion) -> dict[str, Any]:
    proc = hmlops("serve", "--print-example-request")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (one,) = json.loads(proc.stdout)["instances"]
    return {k: v for k, v in one.items() if v is not None}


@pytest.fixture(scope="module")
def predictor(d130_champion) -> Iterator[str]:
    port = free_port_base(1)
    process = subprocess.Popen(
        [*HMLOPS, "serve-one", "predictor", "--model", f"{MODEL}@champion", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HMLOPS_HMAC_KEY": TEST_KEY},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the predictor exited: {process.stderr.read()[-3000:]}")
        try:
            if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("the predictor never became ready")
    yield url
    process.terminate()
    process.wait(timeout=60)


def _tensor(name: str, values: list[Any]) -> dict[str, Any]:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return {
        "name": name,
        "datatype": "INT64" if numeric and all(isinstance(v, int) for v in values) else (
            "FP64" if numeric else "BYTES"
        ),
        "shape": [len(values)],
        "data": values,
    }  # fmt: skip


def _infer(url: str, body: dict[str, Any], path: str = f"/v2/models/{SERVED}/infer") -> Any:
    return requests.post(f"{url}{path}", json=body, timeout=60)


def test_model_metadata_describes_every_input_and_output(predictor, instance, d130_champion):
    answer = requests.get(f"{predictor}/v2/models/{SERVED}", timeout=30)
    assert answer.status_code == 200
    check_exchange(answer)
    metadata = answer.json()
    assert not nulls(metadata), nulls(metadata)
    assert metadata["name"] == SERVED and metadata["versions"] == [str(d130_champion)]
    inputs = {t["name"]: t for t in metadata["inputs"]}
    # everything the example request sends is described, with a datatype the server accepts
    assert set(instance) <= set(inputs)
    for name, value in instance.items():
        expected = "BYTES" if isinstance(value, str) else ("INT64", "FP64")
        assert inputs[name]["datatype"] in expected, (name, inputs[name])
        assert inputs[name]["shape"] == [-1]
    assert [(t["name"], t["datatype"]) for t in metadata["outputs"]] == list(V2_OUTPUTS)
    # the versioned path (the only form the protocol's document lists) is the same model
    versioned = requests.get(f"{predictor}/v2/models/{SERVED}/versions/{d130_champion}", timeout=30)
    check_exchange(versioned)
    assert versioned.json() == metadata
    other = requests.get(f"{predictor}/v2/models/{SERVED}/versions/999", timeout=30)
    assert other.status_code == 404 and f"version {d130_champion}" in other.text


def test_infer_with_a_missing_optional_input_the_protocol_allows(
    predictor, instance, d130_champion
):
    """Two encounters: the second lacks an optional input, named in the tensor's parameters
    (no null anywhere). It scores as the v1 request that omits the field; the response carries
    the model's version and no null."""
    optional = "race"
    assert optional in instance
    second = {k: v for k, v in instance.items() if k != optional}
    tensors = []
    for name in instance:
        tensor = _tensor(name, [instance[name], instance[name]])
        if name == optional:
            tensor["parameters"] = {MISSING_ROWS: "1"}
            tensor["data"] = [instance[name], ""]  # any BYTES value: the row is not read
        tensors.append(tensor)
    answer = _infer(predictor, {"id": "oip-1", "inputs": tensors})
    assert answer.status_code == 200, answer.text
    check_exchange(answer)
    body = answer.json()
    assert not nulls(body), nulls(body)
    assert body["model_name"] == SERVED and body["model_version"] == str(d130_champion)
    assert body["id"] == "oip-1"
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    v1 = httpx.post(
        f"{predictor}/v1/models/{SERVED}:predict", json={"instances": [instance, second]}
    ).json()["predictions"]
    assert outputs["risk"] == [p["risk"] for p in v1]
    assert [json.loads(m) for m in outputs["missing_inputs"]] == [p["missing_inputs"] for p in v1]
    assert optional in json.loads(outputs["missing_inputs"][1])
    # an optional input no row has: its tensor omitted
    omitted = [t for t in tensors if t["name"] != optional]
    for t in omitted:
        t["data"] = t["data"][:1]
        t["shape"] = [1]
    alone = _infer(
        predictor, {"inputs": omitted}, f"/v2/models/{SERVED}/versions/{d130_champion}/infer"
    )
    assert alone.status_code == 200, alone.text
    check_exchange(alone)
    assert {o["name"]: o["data"] for o in alone.json()["outputs"]}["risk"] == [v1[1]["risk"]]


def test_null_and_bad_missing_rows_are_400s_the_protocol_describes(predictor, instance):
    tensors = [_tensor(name, [value]) for name, value in instance.items()]
    with_null = [dict(t, data=[None]) if t["name"] == "race" else t for t in tensors]
    refused = requests.post(
        f"{predictor}/v2/models/{SERVED}/infer", json={"inputs": with_null}, timeout=60
    )
    assert refused.status_code == 400
    # the error body is the protocol's; the request itself is not valid OIP (null in data)
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
    from openapi_core.validation.request.exceptions import InvalidRequestBody

    from tests.oip import oip_spec

    spec = oip_spec()
    with pytest.raises(InvalidRequestBody):
        spec.validate_request(RequestsOpenAPIRequest(refused.request))
    spec.validate_response(
        RequestsOpenAPIRequest(refused.request), RequestsOpenAPIResponse(refused)
    )
    (error,) = json.loads(refused.json()["error"])["errors"]
    assert error["field"] == "inputs.race" and MISSING_ROWS in error["message"]
    for bad, said in (("x", "row numbers"), ("5", "names row 5 of 1")):
        marked = [dict(t, parameters={MISSING_ROWS: bad}) if t["name"] == "race" else t
                  for t in tensors]  # fmt: skip
        answer = _infer(predictor, {"inputs": marked})
        assert answer.status_code == 400
        check_exchange(answer)
        (error,) = json.loads(answer.json()["error"])["errors"]
        assert (
            error["field"] == f"inputs.race.parameters.{MISSING_ROWS}" and said in error["message"]
        )


def test_health_and_model_readiness_are_the_protocols(predictor, d130_champion):
    for path in (
        "/v2/health/live",
        "/v2/health/ready",
        f"/v2/models/{SERVED}/ready",
        f"/v2/models/{SERVED}/versions/{d130_champion}/ready",
    ):
        answer = requests.get(f"{predictor}{path}", timeout=30)
        assert answer.status_code == 200, (path, answer.text)
        check_exchange(answer)
        assert not nulls(answer.json()), (path, answer.json())


def test_kserves_reference_client_talks_to_the_predictor(predictor, instance, d130_champion):
    """``kserve.InferenceRESTClient`` (v2): readiness and an inference, as any OIP client
    would call the predictor."""
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def call() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=1, timeout=60))
        try:
            assert await client.is_server_ready(predictor)
            assert await client.is_model_ready(predictor, SERVED)
            inputs = []
            for name, value in instance.items():
                tensor = _tensor(name, [value])
                inputs.append(InferInput(name, [1], tensor["datatype"], data=tensor["data"]))
            return await client.infer(
                predictor, InferRequest(SERVED, inputs, request_id="ref-client"), SERVED
            )
        finally:
            await client.close()

    response = asyncio.run(call())
    # (the client's binary-aware decoding keeps no model_version; the JSON carries it, above)
    assert response.model_name == SERVED and response.id == "ref-client"
    outputs = {o.name: o for o in response.outputs}
    assert set(outputs) == {name for name, _ in V2_OUTPUTS}
    risk = outputs["risk"].data[0]
    assert 0 < risk < 1
    assert outputs["model_version"].data[0] == f"{MODEL}/{d130_champion}"
