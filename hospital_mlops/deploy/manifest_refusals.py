"""What a manifest's translation to ``podman run`` refuses, and the checks that refuse it.

``ManifestTranslationError`` names the field it cannot honour: a value that is not the mapping
or the list of strings it must be, a field this translation does not know (the known ones are
listed in the message), or a ``$(VAR)`` expansion, which podman would not perform. Every part of
the translation (``manifest_pods``, ``manifest_container_spec``, ``manifest_confinement``,
``manifest_podman_run``) refuses through these, so nothing unknown is dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any


class ManifestTranslationError(ValueError):
    """A manifest field this translation cannot honour, or a value it cannot resolve; the
    message names the field."""


_EXPANSION = re.compile(r"\$\([A-Za-z_][A-Za-z0-9_.-]*\)")


def required_mapping(value: Any, where: str) -> Mapping[str, Any]:
    """The value, refused unless it is a mapping."""
    if not isinstance(value, Mapping):
        raise ManifestTranslationError(f"{where}: expected a mapping, not {type(value).__name__}")
    return value


def refuse_unknown(obj: Mapping[str, Any], known: set[str] | Mapping[str, Any], where: str) -> None:
    """Refuses the first key of ``obj`` not in ``known``, naming it and the known ones."""
    unknown = sorted(set(obj) - set(known))
    if unknown:
        raise ManifestTranslationError(
            f"{where}.{unknown[0]}: not translated to podman (known here: {sorted(known)})"
        )


def string_list(values: Any, where: str) -> list[str]:
    """A list of strings, refused otherwise or when one holds a ``$(VAR)`` expansion."""
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ManifestTranslationError(f"{where}: expected a list of strings")
    for value in values:
        refuse_expansion(value, where)
    return list(values)


def refuse_expansion(value: str, where: str) -> None:
    """Refuses a ``$(VAR)`` expansion, which Kubernetes performs and podman would not."""
    if _EXPANSION.search(value):
        raise ManifestTranslationError(
            f"{where}: $(VAR) expansion ({_EXPANSION.search(value)!r}) is not translated"
        )
