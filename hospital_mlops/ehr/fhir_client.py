"""The prefetch completed from the EHR's FHIR server: the keys a CDS Hooks call did not send are
fetched with its ``fhirAuthorization`` token, as the spec describes. The token and the FHIR data
are never logged; a server that fails is a 412 naming the key, never a guess.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx

from hospital_mlops.ehr.cds_config import Service
from hospital_mlops.ehr.cds_request import OPTIONAL_PREFETCH, CdsRequestError, templates_for
from hospital_mlops.ehr.fhir_record import BUNDLE_KEY

TOKEN = re.compile(r"\{\{context\.(\w+)\}\}")


async def fetch_missing(body: dict[str, Any], service: Service, timeout: float) -> dict[str, Any]:
    """The prefetch, completed from ``fhirServer`` where keys are missing; 412 when a required
    key is missing and there is no server to ask. As CDS Hooks 2.0 has it, a key the client
    left out is missing, and so is one holding an OperationOutcome (the client's error fetching
    it, which it SHOULD send that way); a key holding ``null`` is the client's answer that there
    is no such data, and is not fetched again."""
    prefetch = {
        key: value
        for key, value in (body.get("prefetch") or {}).items()
        if not _client_error(value)
    }
    if prefetch.get(BUNDLE_KEY) is not None:
        return prefetch
    missing = [k for k in templates_for(service) if k not in prefetch]
    if not missing:
        return prefetch
    server = body.get("fhirServer")
    if server is None:
        absent = [k for k in missing if k not in OPTIONAL_PREFETCH]
        if absent:
            raise CdsRequestError(
                412,
                [("prefetch", f"missing {', '.join(absent)} and no fhirServer to fetch them from")],
            )
        return prefetch  # the client tried and could not: those types stay unknown
    headers = {"Accept": "application/fhir+json"}
    auth = body.get("fhirAuthorization")
    if auth:
        headers["Authorization"] = f"Bearer {auth['access_token']}"
    context = body["context"]
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:

        async def one(key: str) -> tuple[str, Any]:
            path = TOKEN.sub(
                lambda m: str(context.get(m.group(1), "")), templates_for(service)[key]
            )
            try:
                answer = await client.get(f"{server.rstrip('/')}/{path}", headers=headers)
            except httpx.HTTPError as exc:
                raise CdsRequestError(
                    412,
                    [(f"prefetch.{key}", f"the FHIR server did not answer ({type(exc).__name__})")],
                ) from None
            if answer.status_code != 200:
                raise CdsRequestError(
                    412,
                    [(f"prefetch.{key}", f"the FHIR server answered {answer.status_code}")],
                )
            try:
                return key, answer.json()
            except ValueError:
                raise CdsRequestError(
                    412, [(f"prefetch.{key}", "the FHIR server sent no JSON")]
                ) from None

        async def fetched(key: str) -> tuple[str, Any] | None:
            try:
                return await one(key)
            except CdsRequestError:
                if key in OPTIONAL_PREFETCH:
                    return None  # an optional input's type stays unknown: reported missing
                raise

        for done in await asyncio.gather(*(fetched(k) for k in missing)):
            if done is not None:
                prefetch[done[0]] = done[1]
    return prefetch


def _client_error(value: Any) -> bool:
    """A prefetch value that is the client's failure: an OperationOutcome with an error, alone
    or as a searchset's only content (a search's informational outcome beside no matches is
    an empty answer, not a failure)."""
    if not isinstance(value, dict):
        return False
    if value.get("resourceType") == "Bundle":
        entries = [e.get("resource") for e in value.get("entry") or [] if isinstance(e, dict)]
        return bool(entries) and all(_failed(r) for r in entries)
    return _failed(value)


def _failed(resource: Any) -> bool:
    if not isinstance(resource, dict) or resource.get("resourceType") != "OperationOutcome":
        return False
    issues = resource.get("issue") or []
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in issues)
