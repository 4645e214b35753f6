"""The Open Inference Protocol's own OpenAPI document (schemas/oip/), as a validator of real HTTP
exchanges with ``openapi-core``.

Two rewrites, both of form only: the document's ``${MODEL_NAME}`` placeholders become OpenAPI's
``{model_name}`` (schemas/oip/README.md), and each versioned model path gets its unversioned twin,
because the protocol's text makes the version segment optional
(``/v2/models/${MODEL_NAME}[/versions/${MODEL_VERSION}]/infer``) while the document lists only the
versioned form. Nothing in a schema is relaxed.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import requests
import yaml

SPEC = Path(__file__).resolve().parents[1] / "schemas" / "oip" / "open_inference_rest.yaml"


@functools.cache
def oip_spec() -> Any:
    from openapi_core import OpenAPI

    raw = SPEC.read_text().replace("${MODEL_NAME}", "{model_name}")
    raw = raw.replace("${MODEL_VERSION}", "{model_version}").replace("MODEL_NAME", "model_name")
    raw = raw.replace("MODEL_VERSION", "model_version")
    document = yaml.safe_load(raw)
    paths = document["paths"]
    for path, item in list(paths.items()):
        if "/versions/{model_version}" in path:
            twin = copy.deepcopy(item)
            twin["parameters"] = [
                p for p in twin.get("parameters", []) if p.get("name") != "model_version"
            ]
            for operation in twin.values():
                if isinstance(operation, dict):
                    operation["parameters"] = [
                        p for p in operation.get("parameters", [])
                        if p.get("name") != "model_version"
                    ]  # fmt: skip
                    if "operationId" in operation:
                        operation["operationId"] += "-unversioned"
            paths.setdefault(path.replace("/versions/{model_version}", ""), twin)
    return OpenAPI.from_dict(document)


def check_exchange(response: requests.Response) -> None:
    """The request sent and the response received both valid against the document (raises
    openapi-core's validation error naming what is wrong)."""
    from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse

    request = RequestsOpenAPIRequest(response.request)
    spec = oip_spec()
    spec.validate_request(request)
    spec.validate_response(request, RequestsOpenAPIResponse(response))


def nulls(value: Any, where: str = "$") -> list[str]:
    """Every JSON path holding null: the protocol's schema allows none in tensors, parameters
    or versions."""
    if value is None:
        return [where]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{where}[{i}]")]
    return []
