"""A CycloneDX 1.6 SBOM of the running Python environment (cyclonedx-python-lib).

One component per installed distribution, with its package URL, its declared licence (the same
reading as the licence inventory, so BSL-licensed alibi shows as ``BUSL-1.1``) and a property
saying whether that licence is OSI-approved. Written only after the document validates against
the CycloneDX JSON schema.

The NTIA minimum elements: each component's supplier (its metadata's author or maintainer, else
the organisation of its source repository, else ``NOASSERTION``, counted in the summary), name,
version and package URL; the dependency graph (every component depended on by something: one
installed without any declared requirement naming it hangs off the application); the SBOM's
author (governance.yaml's developer) and tools, and its timestamp.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from hospital_mlops import __version__
from hospital_mlops.governance.licenses import LicenceRecord, classify

SPEC = "1.6"
BUSL = "BUSL-1.1"
ROOT = "hospital-mlops"
NOASSERTION = "NOASSERTION"  # SPDX's word for a fact the source does not state
_EMAIL_NAME = re.compile(r'^\s*"?([^"<]+?)"?\s*<')
# "Copyright (c) 2012, Anaconda, Inc." / "Copyright 2023 Databricks, Inc.  All rights reserved."
_COPYRIGHT = re.compile(
    r"^\s*Copyright\s+(?:\(c\)|©)?\s*[\d\-–, ]*\s*(?:by\s+)?"
    r"([A-Z][^.\n]*?(?:Inc\.|Ltd\.|LLC|[A-Za-z)]))\s*(?:\.|All rights reserved|$)",
    re.IGNORECASE,
)
_FORGE = re.compile(r"^https?://(?:www\.)?(github\.com|gitlab\.com|bitbucket\.org)/([^/#?]+)")


class SbomInvalid(RuntimeError):
    """The generated document does not validate against the CycloneDX schema."""


def _licences(record: LicenceRecord) -> list[Any]:
    from cyclonedx.contrib.license.factories import LicenseFactory
    from cyclonedx.model.license import DisjunctiveLicense

    if record.osi_approved is None and record.licence == "not declared":
        return []
    if record.osi_approved is False and "business source" in record.licence.lower():
        return [DisjunctiveLicense(id=BUSL)]
    try:
        return [LicenseFactory().make_from_string(record.licence)]
    except ValueError:  # free text that is neither an SPDX id nor an expression
        return [DisjunctiveLicense(name=record.licence[:200])]


def supplier_name(dist: Distribution) -> str:
    """Who supplies a distribution, by its own metadata: its author or maintainer (by name, or
    by the name in an ``Author-email`` list), else the copyright holder its own licence file
    names, else the organisation or user that publishes its source repository, else
    ``NOASSERTION``."""
    meta: Any = dist.metadata
    for field in ("Author", "Maintainer"):
        value = str(meta.get(field) or "").strip()
        if value and value.upper() != "UNKNOWN":
            return value[:200]
    for field in ("Author-email", "Maintainer-email"):
        value = str(meta.get(field) or "").strip()
        if value:
            first = value.split(",")[0]
            named = _EMAIL_NAME.match(first)
            return (named.group(1) if named else first.strip())[:200]
    holder = _licence_holder(dist)
    if holder:
        return holder
    urls = [str(meta.get("Home-page") or "")]
    urls += [u.split(",", 1)[-1].strip() for u in meta.get_all("Project-URL") or []]
    for url in urls:
        forge = _FORGE.match(url)
        if forge:
            return f"{forge.group(2)} ({forge.group(1)})"
    return NOASSERTION


def _licence_holder(dist: Distribution) -> str | None:
    """The first copyright holder the distribution's own licence file names (not its
    third-party notices)."""
    for file in dist.files or []:
        name = file.name.upper()
        if not name.startswith(("LICENSE", "LICENCE", "COPYING")) or "THIRD" in name:
            continue
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        for line in text.splitlines()[:60]:
            found = _COPYRIGHT.match(line)
            if found and "copyright owner" not in line.lower():
                return found.group(1).strip(" ,")[:200]
    return None


def _sbom_metadata(bom: Any) -> None:
    """The SBOM's author (governance.yaml's developer), the tools that wrote it and the
    application it describes, with its supplier."""
    from importlib.metadata import version

    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalContact, OrganizationalEntity
    from packageurl import PackageURL

    from hospital_mlops.governance.config import load_governance

    developer = load_governance().developer
    contact = developer.contact if "@" in developer.contact else None
    bom.metadata.authors.add(OrganizationalContact(name=developer.name, email=contact))
    bom.metadata.component = Component(
        name="hospital-mlops",
        version=__version__,
        type=ComponentType.APPLICATION,
        bom_ref=ROOT,
        purl=PackageURL("pypi", name=ROOT, version=__version__),
        supplier=OrganizationalEntity(name=developer.name),
    )
    for name, tool_version in (
        ("hospital-mlops", __version__),
        ("cyclonedx-python-lib", version("cyclonedx-python-lib")),
    ):
        bom.metadata.tools.components.add(
            Component(
                name=name, version=tool_version, type=ComponentType.APPLICATION,
                bom_ref=f"tool:{name}@{tool_version}",
            )
        )  # fmt: skip


def build_bom() -> Any:
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.contact import OrganizationalEntity
    from packageurl import PackageURL

    bom = Bom()
    _sbom_metadata(bom)
    by_name: dict[str, Component] = {}
    requires: dict[str, list[str]] = {}
    for dist in sorted(distributions(), key=lambda d: str(d.metadata["Name"]).lower()):
        record = classify(dist)
        key: str = canonicalize_name(record.name)
        if key in by_name or key in requires:
            continue
        requires[key] = _installed_requirements(dist, every_extra=key == ROOT)
        if key == ROOT:
            continue
        osi = {True: "true", False: "false", None: "unknown"}[record.osi_approved]
        by_name[key] = Component(
            name=record.name,
            version=record.version,
            type=ComponentType.LIBRARY,
            bom_ref=f"pkg:pypi/{key}@{record.version}",
            purl=PackageURL("pypi", name=key, version=record.version),
            licenses=_licences(record),
            supplier=OrganizationalEntity(name=supplier_name(dist)),
            properties=[
                Property(name="hospital-mlops:licence-osi-approved", value=osi),
                Property(name="hospital-mlops:licence-evidence", value=record.evidence),
            ],
        )
        bom.components.add(by_name[key])
    # the dependency graph, from each distribution's Requires-Dist (markers evaluated here); what
    # nothing names (an extra's requirement, a build tool) is the application's, which ships it
    needed = {n for needs in requires.values() for n in needs}
    root = bom.metadata.component
    assert root is not None  # _sbom_metadata set it
    for key, needs in requires.items():
        target = root if key == ROOT else by_name[key]
        if key == ROOT:
            needs = [*needs, *sorted(set(by_name) - needed - set(needs))]
        bom.register_dependency(target, [by_name[n] for n in needs if n in by_name])
    return bom


def _installed_requirements(dist: Distribution, every_extra: bool = False) -> list[str]:
    """Requirement names; for the root, those of its extras too (the images install them)."""
    from packaging.requirements import InvalidRequirement, Requirement

    names: list[str] = []
    for line in dist.requires or []:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if every_extra or req.marker is None or req.marker.evaluate({"extra": ""}):
            names.append(canonicalize_name(req.name))
    return names


def sbom_json(bom: Any, model: tuple[str, int] | None = None) -> str:
    """The document, with the registered ``model`` version's ML-BOM components when given,
    validated against the CycloneDX 1.6 schema."""
    from cyclonedx.output.json import JsonV1Dot6

    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    if model is not None:
        from hospital_mlops.governance.ml_bom import model_components

        document = json.loads(text)
        supplier = document["metadata"]["component"]["supplier"]["name"]
        components, dependencies = model_components(model[0], model[1], supplier)
        document["components"] = [*document.get("components", []), *components]
        graph = document.setdefault("dependencies", [])
        for entry in graph:
            if entry["ref"] == ROOT:  # the application ships the model
                entry.setdefault("dependsOn", []).append(components[0]["bom-ref"])
        graph.extend(dependencies)
        text = json.dumps(document, indent=2)
    validate_sbom(text)
    return text


def validate_sbom(text: str) -> None:
    """SbomInvalid unless the text validates against the CycloneDX 1.6 JSON schema."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomInvalid(f"the SBOM does not validate against CycloneDX {SPEC}: {error}")


def write_sbom(path: Path, model: tuple[str, int] | None = None) -> dict[str, Any]:
    """Write the environment's SBOM (with ``model``, a registered version as ML-BOM
    components); returns a summary (components, licences not OSI-approved)."""
    text = sbom_json(build_bom(), model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    document = json.loads(text)
    components = document.get("components", [])

    def osi(c: dict[str, Any]) -> str:
        props = {p["name"]: p["value"] for p in c.get("properties", [])}
        return props.get("hospital-mlops:licence-osi-approved", "unknown")

    return {
        "path": str(path),
        "spec_version": document["specVersion"],
        "components": len(components),
        "not_osi_approved": sorted(c["name"] for c in components if osi(c) == "false"),
        "licence_unknown": sorted(c["name"] for c in components if osi(c) == "unknown"),
        "model": f"{model[0]}@{model[1]}" if model else None,
        "supplier_not_declared": sorted(
            c["name"] for c in components if c.get("supplier", {}).get("name") == NOASSERTION
        ),
    }
