"""A registered model version's card as FHIR R4, following HL7's AI Transparency on FHIR
implementation guide (STU1, 1.0.0; FHIR R4 4.0.1): ``hmlops governance fhir``, and the CDS
service's ``/model-cards/{model}/{version}`` that each card links.

One ``collection`` Bundle of four resources:

- a ``DocumentReference`` claiming the IG's ``AI-ModelCard`` profile: the CHAI Applied Model
  Card the training step registered, as CHAI XML (the profile's ``CHAIformat`` content slice),
  JSON and the self-contained HTML page, each attachment with its R4 ``size`` and SHA-1 ``hash``;
  ``docStatus`` is ``final`` only when every required sign-off is recorded;
- a ``Device`` claiming ``AI-Device``: the model (``Artificial-Intelligence``, of kind
  ``Machine-Learning-Models``), its registered name, version and artifact hash, pointing at its
  card with the IG's ``modelCardDescription`` extension;
- an ``Organization``: the developer the governance file names;
- a plain R4 ``Provenance`` of the card (the IG's ``AI-Provenance`` is for what a model produces,
  not for its card): the developer as author, this software as assembler, each sign-off as a
  verifier, the model and the registered evidence files (by hash) as sources.

The IG's published STU1 moved its code systems to HL7 terminology (THO). ``AIinputsCS`` is
``http://terminology.hl7.org/CodeSystem/AIinputsCS`` there, as the STU1 pages state;
``DocumentReference.type`` is a closed slice, so only that coding is sent. ``Device.type`` is
a pattern, which lets both the IG's own ``AIdeviceTypeCS`` URL and its THO home be sent, so the
Device conforms whichever the validator's package holds.

Only the registry's own records are read, and each card file is checked against the hash the
training step registered: a card changed since registration is refused, never published.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from hospital_mlops import artifacts
from hospital_mlops.governance.registry import store_errors

IG = "http://hl7.org/fhir/uv/aitransparency"
IG_VERSION = "1.0.0"
AI_DEVICE_PROFILE = f"{IG}/StructureDefinition/AI-Device|{IG_VERSION}"
AI_MODEL_CARD_PROFILE = f"{IG}/StructureDefinition/AI-ModelCard|{IG_VERSION}"
AI_KIND = f"{IG}/StructureDefinition/aitransparency.AIKind"
MODEL_CARD_DESCRIPTION = f"{IG}/StructureDefinition/aitransparency.modelCardDescription"
AI_INPUTS = "http://terminology.hl7.org/CodeSystem/AIinputsCS"
AI_DEVICE_TYPES = (
    f"{IG}/CodeSystem/AIdeviceTypeCS",
    "http://terminology.hl7.org/CodeSystem/AIdeviceTypeCS",
)
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
SYSTEM = "urn:hospital-mlops"  # the identifier systems this project mints

CARD_FILES = (  # (registered evidence file, content type, title), the IG's CHAI slice first
    (artifacts.MODEL_CARD_XML, "application/xml", "CHAI Applied Model Card (XML)"),
    (artifacts.MODEL_CARD_JSON, "application/json", "CHAI Applied Model Card (JSON)"),
    (artifacts.MODEL_CARD_HTML, "text/html", "Model card (self-contained HTML page)"),
)


class ModelCardUnavailable(LookupError):
    """The version's card cannot be published as it was registered."""


@dataclass(frozen=True)
class RegisteredCard:
    """What the FHIR card is made of: the registry's records of one version."""

    model: str
    version: int
    model_sha256: str
    run_id: str
    files: dict[str, bytes]  # the card files, by registered evidence name
    evidence_sha256: dict[str, str]  # every registered evidence file's hash
    signoffs: dict[str, dict[str, str]]  # role → {"by", "at", …}
    required_signoffs: tuple[str, ...]
    software: str  # the software that assembles the Bundle, with its version
    released: str = ""  # the card's release date (YYYY-MM-DD), when it has one
    card: dict[str, Any] = field(default_factory=dict)  # the card's JSON, parsed
    retired: bool = False  # retired from service (the Device is then inactive)


def _id(card: RegisteredCard, kind: str) -> str:
    """A stable id per version and card content: the same card, the same resources."""
    digest = card.evidence_sha256.get(artifacts.MODEL_CARD_JSON, "")
    name = f"{SYSTEM}:{card.model}:{card.version}:{digest}:{kind}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, name))


def _coding(system: str, code: str, display: str) -> dict[str, str]:
    return {"system": system, "code": code, "display": display}


def _attachment(data: bytes, content_type: str, title: str, created: str) -> dict[str, Any]:
    attachment: dict[str, Any] = {
        "contentType": content_type,
        "language": "en",
        "data": base64.b64encode(data).decode("ascii"),
        "size": len(data),
        # R4: "The calculated hash of the data using SHA-1. Represented using base64"
        "hash": base64.b64encode(hashlib.sha1(data).digest()).decode("ascii"),
        "title": title,
    }
    if created:
        attachment["creation"] = created
    return attachment


def _telecom(contact: str) -> list[dict[str, str]]:
    contact = contact.strip()
    if not contact or contact == "MISSING":
        return []
    if "@" in contact and " " not in contact:
        return [{"system": "email", "value": contact}]
    if contact.startswith(("http://", "https://")):
        return [{"system": "url", "value": contact}]
    return [{"system": "other", "value": contact}]


def model_card_bundle(card: RegisteredCard, now: datetime) -> dict[str, Any]:
    """The Bundle (pure: the same card and time give the same document)."""
    stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
    basic = card.card.get("BasicInfo", {})
    title = str(basic.get("ModelName") or card.model)
    developer = str(basic.get("ModelDeveloper") or "unknown developer")
    ids = {k: _id(card, k) for k in ("bundle", "document", "device", "organization", "provenance")}
    ref = {k: {"reference": f"urn:uuid:{v}"} for k, v in ids.items()}
    named = f"{card.model}/{card.version}"
    signed = all(role in card.signoffs for role in card.required_signoffs)

    organization = {
        "resourceType": "Organization",
        "id": ids["organization"],
        "active": True,
        "name": developer,
        "telecom": _telecom(str(basic.get("DeveloperContact", ""))),
    }
    if not organization["telecom"]:
        del organization["telecom"]
    device = {
        "resourceType": "Device",
        "id": ids["device"],
        "meta": {"profile": [AI_DEVICE_PROFILE]},
        "extension": [
            {
                "url": AI_KIND,
                "valueCodeableConcept": {
                    "coding": [
                        _coding(s, "Machine-Learning-Models", "Machine Learning Models")
                        for s in AI_DEVICE_TYPES
                    ]
                },
            },
            {"url": MODEL_CARD_DESCRIPTION, "valueReference": ref["document"]},
        ],
        "identifier": [
            {"system": f"{SYSTEM}:registered-model", "value": named},
            {
                "type": {"text": "SHA-256 of the model artifact"},
                "system": f"{SYSTEM}:model-sha256",
                "value": card.model_sha256,
            },
        ],
        "status": "inactive" if card.retired else "active",
        "manufacturer": developer,
        "deviceName": [
            {"name": title, "type": "user-friendly-name"},
            {"name": card.model, "type": "model-name"},
        ],
        "modelNumber": card.model,
        "type": {
            "coding": [
                _coding(s, "Artificial-Intelligence", "All kinds of Artificial Intelligence")
                for s in AI_DEVICE_TYPES
            ]
        },
        "version": [{"value": str(card.version)}],
        "owner": ref["organization"],
    }
    document = {
        "resourceType": "DocumentReference",
        "id": ids["document"],
        "meta": {"profile": [AI_MODEL_CARD_PROFILE]},
        "masterIdentifier": {"system": f"{SYSTEM}:model-card", "value": named},
        "identifier": [
            {
                "type": {"text": "SHA-256 of the registered card (JSON)"},
                "system": f"{SYSTEM}:evidence-sha256",
                "value": card.evidence_sha256[artifacts.MODEL_CARD_JSON],
            }
        ],
        "status": "current",
        "docStatus": "final" if signed else "preliminary",
        "type": {"coding": [_coding(AI_INPUTS, "AIModelCard", "AI Model-Card")]},
        "category": [{"coding": [_coding(AI_INPUTS, "AImodelCardCHAIformat", "CHAI Format")]}],
        "date": stamp,
        "author": [ref["organization"]],
        "description": f"CHAI Applied Model Card of {title}: {card.model} version {card.version}",
        "content": [
            {"attachment": _attachment(card.files[name], kind, label, card.released)}
            for name, kind, label in CARD_FILES
        ],
        "context": {"related": [ref["device"]]},
    }
    provenance = {
        "resourceType": "Provenance",
        "id": ids["provenance"],
        "target": [ref["document"]],
        "recorded": stamp,
        "activity": {"coding": [_coding(DATA_OPERATION, "CREATE", "create")]},
        "agent": [
            {"type": _concept(PARTICIPANT, "author", "Author"), "who": ref["organization"]},
            {
                "type": _concept(PARTICIPANT, "assembler", "Assembler"),
                "who": {"display": card.software},
            },
            *(
                {
                    "type": _concept(PARTICIPANT, "verifier", "Verifier"),
                    "role": [{"text": f"{role} sign-off ({signoff.get('at', 'time unknown')})"}],
                    "who": {"display": str(signoff.get("by", "unknown"))},
                }
                for role, signoff in sorted(card.signoffs.items())
            ),
        ],
        "entity": [
            {"role": "source", "what": {**ref["device"], "display": f"model {named}"}},
            *(
                {
                    "role": "source",
                    "what": {
                        "identifier": {"system": f"{SYSTEM}:evidence-sha256", "value": digest},
                        "display": f"registered evidence {name} (MLflow run {card.run_id})",
                    },
                }
                for name, digest in sorted(card.evidence_sha256.items())
            ),
        ],
    }
    return {
        "resourceType": "Bundle",
        "id": ids["bundle"],
        "identifier": {"system": f"{SYSTEM}:model-card-bundle", "value": named},
        "type": "collection",
        "timestamp": stamp,
        "entry": [
            {"fullUrl": f"urn:uuid:{ids[key]}", "resource": resource}
            for key, resource in (
                ("document", document),
                ("device", device),
                ("organization", organization),
                ("provenance", provenance),
            )
        ],
    }


def _date(value: Any) -> str:
    """A FHIR date, or empty (a card's unknown date reads MISSING)."""
    text = str(value or "")[:10]
    return text if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) else ""


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def fhir_problems(bundle: dict[str, Any]) -> list[str]:
    """What FHIR's own models (``fhir.resources``) refuse in the Bundle; empty when valid."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    try:
        get_fhir_model_class("Bundle").model_validate(bundle)
    except ValidationError as exc:
        return [
            f"{'.'.join(str(p) for p in e['loc']) or 'Bundle'}: {e['msg'][:160]}"
            for e in exc.errors()
        ]
    return []


@store_errors
def current_status(card: RegisteredCard) -> RegisteredCard:
    """The card with the registry's present sign-offs and retirement: they change after
    registration, the card's files never do (a server keeps those, and asks for these)."""
    from hospital_mlops.governance import registry

    mv = registry.resolve(registry.client(), card.model, str(card.version))
    return replace(card, signoffs=registry.signoffs(mv), retired=registry.retired(mv) is not None)


@store_errors
def registered_card(model: str, version: int) -> RegisteredCard:
    """The version's card files and records, each card file checked against its registered
    hash. Refused (``ModelCardUnavailable``) when the version has no card or it changed; the
    store's failures are the registry's errors (``RegistryError``, ``RegistryUnavailable``)."""
    from hospital_mlops import __version__
    from hospital_mlops.governance import registry
    from hospital_mlops.governance.config import load_governance

    mv = registry.resolve(registry.client(), model, str(version))  # refuses an unknown one
    registered: dict[str, str] = json.loads(dict(mv.tags).get("evidence.sha256", "{}"))
    files: dict[str, bytes] = {}
    for name, _, _ in CARD_FILES:
        if name not in registered:
            raise ModelCardUnavailable(
                f"{model} version {version} registered no {name}: it has no card to publish"
            )
        path = registry.evidence_file(mv.run_id, artifacts.evidence(name))
        if path is None:
            raise ModelCardUnavailable(
                f"{model} version {version}: {name} is registered but no longer stored"
            )
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != registered[name]:
            raise ModelCardUnavailable(
                f"{model} version {version}: {name} changed since registration (its sha256 no "
                "longer matches): not published"
            )
        files[name] = data
    document = json.loads(files[artifacts.MODEL_CARD_JSON])
    model_sha256 = registry.training_record(mv).get("model_sha256")
    if not isinstance(model_sha256, str):
        raise ModelCardUnavailable(
            f"{model} version {version}: its training record has no model hash"
        )
    return RegisteredCard(
        model=model,
        version=int(mv.version),
        model_sha256=model_sha256,
        run_id=str(mv.run_id),
        files=files,
        evidence_sha256=registered,
        signoffs=registry.signoffs(mv),
        required_signoffs=tuple(load_governance().required_signoffs),
        software=f"hospital-mlops {__version__}",
        released=_date(document.get("ReleaseInfo", {}).get("ReleaseDate")),
        card=document,
        retired=registry.retired(mv) is not None,
    )
