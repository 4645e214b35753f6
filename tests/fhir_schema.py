"""The HL7 FHIR R4 JSON Schema (schemas/fhir-r4/) as a validator of the resources and Bundles we
build and read. Each resource is checked against its own definition, a Bundle's entries each by
their ``resourceType``, so every problem names the resource and the path."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "fhir-r4" / "fhir.schema.json"


@functools.cache
def _definitions() -> dict[str, Any]:
    return dict(json.loads(SCHEMA.read_text())["definitions"])


@functools.cache
def _validator(kind: str) -> Any:
    from jsonschema import Draft6Validator

    definitions = _definitions()
    if kind not in definitions:
        raise KeyError(f"FHIR R4 has no resource type {kind!r}")
    return Draft6Validator({"$ref": f"#/definitions/{kind}", "definitions": definitions})


def fhir_problems(resource: dict[str, Any]) -> list[str]:
    """Every schema problem of ``resource`` (a Bundle's entries' included), as
    ``Type/id.path: message``; empty when it is valid FHIR R4 JSON."""
    kind = str(resource.get("resourceType"))
    where = f"{kind}/{resource.get('id', '?')}"
    if kind == "Bundle":
        shell = {**resource, "entry": [{k: v for k, v in e.items() if k != "resource"}
                                       for e in resource.get("entry") or []]}  # fmt: skip
        problems = _problems(shell, "Bundle", where)
        for entry in resource.get("entry") or []:
            if isinstance(entry.get("resource"), dict):
                problems += fhir_problems(entry["resource"])
        return problems
    return _problems(resource, kind, where)


def _problems(resource: dict[str, Any], kind: str, where: str) -> list[str]:
    try:
        validator = _validator(kind)
    except KeyError as exc:
        return [f"{where}: {exc}"]
    return [
        f"{where}.{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:200]}"
        for e in validator.iter_errors(resource)
    ]
