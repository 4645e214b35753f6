"""A CDS Hooks 2.0 call as the service receives it: the services' discovery document, their
prefetch templates, and the request's own fields checked before any FHIR content is read.

Every refusal is a CdsRequestError with the HTTP status the spec asks for and field-level
problems, so the HTTP door only has to serialise it.
"""

from __future__ import annotations

import re
from typing import Any

from hospital_mlops.ehr.cds_config import ENCOUNTER_HOOKS, CdsConfig, Service

ENCOUNTER_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "encounter": "Encounter/{{context.encounterId}}",
    "conditions": "Condition?patient={{context.patientId}}&encounter={{context.encounterId}}",
    "observations": (
        "Observation?patient={{context.patientId}}&encounter={{context.encounterId}}"
        "&category=laboratory"
    ),
    "medications": (
        "MedicationRequest?patient={{context.patientId}}&encounter={{context.encounterId}}"
    ),
    "procedures": "Procedure?patient={{context.patientId}}&encounter={{context.encounterId}}",
    # CDS Hooks templates cannot compute dates: the service keeps the last year itself
    "priorEncounters": "Encounter?patient={{context.patientId}}&_sort=-date&_count=200",
}
PATIENT_TEMPLATES = {
    key: template.replace("&encounter={{context.encounterId}}", "")
    for key, template in ENCOUNTER_TEMPLATES.items()
    if key != "encounter"
}
# at admission only what is known then is read: the patient, the encounter, earlier encounters,
# and the patient's active coverage (the payer)
ADMISSION_TEMPLATES = {
    **{key: ENCOUNTER_TEMPLATES[key] for key in ("patient", "encounter", "priorEncounters")},
    "coverage": "Coverage?patient={{context.patientId}}&status=active",
}
# Keys an optional input is read from: absent with no fhirServer to ask, the input is reported
# missing and the call is answered, rather than refused with 412.
OPTIONAL_PREFETCH = frozenset({"coverage"})
ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR's id datatype


class CdsRequestError(ValueError):
    def __init__(self, status: int, problems: list[tuple[str, str]]) -> None:
        self.status = status
        self.problems = problems
        super().__init__(problems[0][1])


def templates_for(service: Service) -> dict[str, str]:
    if service.hook == "encounter-start":
        return dict(ADMISSION_TEMPLATES)
    return dict(ENCOUNTER_TEMPLATES if service.hook == "encounter-discharge" else PATIENT_TEMPLATES)


def discovery(config: CdsConfig) -> dict[str, Any]:
    return {
        "services": [
            {
                "hook": s.hook,
                "title": s.title,
                "description": s.description,
                "id": s.id,
                "prefetch": templates_for(s),
                "usageRequirements": (
                    "Send the prefetch (or one 'bundle' key with the patient's Bundle), or a "
                    "fhirServer with read access to these resources."
                ),
            }
            for s in config.services
        ]
    }


def problem_body(problems: list[tuple[str, str]]) -> dict[str, Any]:
    """The 4xx body: one entry per field, never a stack trace."""
    return {"errors": [{"field": where, "message": message} for where, message in problems]}


_HOOK_INSTANCE = re.compile(r"[\x21-\x7e]{1,128}")


def check_call(body: Any, service: Service) -> dict[str, Any]:
    """The CDS Hooks request's own fields (FHIR content is checked later)."""
    if not isinstance(body, dict):
        raise CdsRequestError(400, [("body", "must be a JSON object")])
    problems = []
    if body.get("hook") != service.hook:
        problems.append(("hook", f"this service answers {service.hook!r}"))
    instance = body.get("hookInstance")
    if not isinstance(instance, str) or not instance:
        problems.append(("hookInstance", "is required (a UUID)"))
    elif not _HOOK_INSTANCE.fullmatch(instance):
        # it travels on as the predictor call's x-request-id: a header takes visible ASCII only
        problems.append(("hookInstance", "must be a UUID (visible ASCII, at most 128 characters)"))
    context = body.get("context")
    if not isinstance(context, dict):
        problems.append(("context", "is required"))
        context = {}
    needed = ("userId", "patientId", "encounterId")
    for key in needed if service.hook in ENCOUNTER_HOOKS else needed[:2]:
        value = context.get(key)
        if not isinstance(value, str) or not value:
            problems.append((f"context.{key}", "is required"))
    for key in ("patientId", "encounterId"):
        value = context.get(key)
        if isinstance(value, str) and value and not ID_PATTERN.fullmatch(value):
            problems.append((f"context.{key}", "is not a FHIR id"))
    prefetch = body.get("prefetch", {})
    if prefetch is not None and not isinstance(prefetch, dict):
        problems.append(("prefetch", "must be an object"))
    server = body.get("fhirServer")
    if server is not None and (not isinstance(server, str) or not server.startswith("http")):
        problems.append(("fhirServer", "must be an http(s) URL"))
    auth = body.get("fhirAuthorization")
    if auth is not None:
        if server is None:
            problems.append(("fhirAuthorization", "is given without a fhirServer"))
        if not isinstance(auth, dict) or not isinstance(auth.get("access_token"), str):
            problems.append(("fhirAuthorization.access_token", "is required"))
    if problems:
        raise CdsRequestError(400, problems)
    return body
