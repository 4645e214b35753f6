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
    """The prefetch, completed from ``fhirServer`` where keys are missing (absent or null);
    412 when a key is absent and there is no server to ask."""
    prefetch = dict(body.get("prefetch") or {})
    if prefetch.get(BUNDLE_KEY) is not None:
        return prefetch
    missing = [k for k in templates_for(service) if prefetch.get(k) is None]
    if not missing:
        return prefetch
    server = body.get("fhirServer")
    if server is None:
        absent = [k for k in missing if k not in prefetch and k not in OPTIONAL_PREFETCH]
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

        async def fetched(key: str) -> tuple[str, Any]:
            try:
                return await one(key)
            except CdsRequestError:
                if key in OPTIONAL_PREFETCH:
                    return key, None  # an optional input's type stays unknown: reported missing
                raise

        for key, value in await asyncio.gather(*(fetched(k) for k in missing)):
            prefetch[key] = value
    return prefetch
