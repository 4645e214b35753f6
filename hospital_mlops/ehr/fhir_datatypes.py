"""Reading FHIR R4 datatypes the same way everywhere: a date or dateTime as a UTC datetime (and
back as ISO text), an Encounter's class and the class codes by kind of visit, a
CodeableConcept's codings, and the id a Reference points at."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from typing import Any

# Encounter.class codes (v3 ActCode) by the kind of visit the model counts
OUTPATIENT_CLASSES = {"AMB", "VR", "HH", "OBSENC", "PRENC", "SS"}
EMERGENCY_CLASSES = {"EMER"}
INPATIENT_CLASSES = {"IMP", "ACUTE", "NONAC"}


def as_utc(value: Any) -> datetime | None:
    """A date or dateTime in UTC (a date at midnight, a naive time taken as UTC), else None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime.combine(value, time(), tzinfo=UTC)
    return None


def encounter_class(encounter: Any) -> str | None:
    """The code of an Encounter's ``class`` (IMP, EMER, AMB, …)."""
    cls = getattr(encounter, "class_fhir", None)
    return getattr(cls, "code", None)


def codings_of(concept: Any) -> list[tuple[str, str]]:
    """(system, code) of each coding with a code of a CodeableConcept."""
    return [
        (c.system or "", c.code or "") for c in (getattr(concept, "coding", None) or []) if c.code
    ]


def canonical_systems(value: Any, aliases: Mapping[str, str], seen: set[str]) -> None:
    """Every Coding under ``value`` (a resource, a list of them) rewritten in place from an
    alias system URI to its canonical one; each alias met is added to ``seen``."""
    if not aliases:
        return
    if isinstance(value, list | tuple):
        for item in value:
            canonical_systems(item, aliases, seen)
        return
    fields = getattr(type(value), "model_fields", None)
    if fields is None:
        return
    system = getattr(value, "system", None) if type(value).__name__ == "Coding" else None
    if isinstance(system, str) and system in aliases:
        seen.add(system)
        value.system = aliases[system]
    for name in fields:
        child = getattr(value, name, None)
        if child is not None and not isinstance(child, str | int | float | bool):
            canonical_systems(child, aliases, seen)


def reference_id(reference: Any, kind: str, urls: Mapping[str, str]) -> str | None:
    """The id a Reference points at when it is a ``kind``, resolving bundle fullUrls."""
    text = getattr(reference, "reference", None) if reference is not None else None
    if not text:
        return None
    text = urls.get(text, text)
    head, _, ident = text.rpartition("/")
    if head.endswith(kind) and ident:
        return ident
    return None


def iso_utc(when: datetime) -> str:
    """A UTC time as ISO 8601 text ending in ``Z``."""
    return when.isoformat().replace("+00:00", "Z")
