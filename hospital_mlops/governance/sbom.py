"""A CycloneDX 1.6 SBOM of the running Python environment (cyclonedx-python-lib).

One component per installed distribution, with its package URL, its declared licence (the same
reading as the licence inventory, so BSL-licensed alibi shows as ``BUSL-1.1``) and a property
saying whether that licence is OSI-approved. Written only after the document validates against
the CycloneDX JSON schema.
"""

from __future__ import annotations

import json
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from hospital_mlops import __version__
from hospital_mlops.governance.licenses import LicenceRecord, classify

SPEC = "1.6"
BUSL = "BUSL-1.1"
ROOT = "hospital-mlops"


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


def build_bom() -> Any:
    from cyclonedx.model import Property
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from packageurl import PackageURL

    bom = Bom()
    bom.metadata.component = Component(
        name="hospital-mlops",
        version=__version__,
        type=ComponentType.APPLICATION,
        bom_ref=ROOT,
        purl=PackageURL("pypi", name=ROOT, version=__version__),
    )
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
            properties=[
                Property(name="hospital-mlops:licence-osi-approved", value=osi),
                Property(name="hospital-mlops:licence-evidence", value=record.evidence),
            ],
        )
        bom.components.add(by_name[key])
    # the dependency graph, from each distribution's Requires-Dist (markers evaluated here)
    for key, needs in requires.items():
        target = bom.metadata.component if key == ROOT else by_name[key]
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


def sbom_json(bom: Any) -> str:
    from cyclonedx.output.json import JsonV1Dot6

    text: str = JsonV1Dot6(bom).output_as_string(indent=2)
    validate_sbom(text)
    return text


def validate_sbom(text: str) -> None:
    """SbomInvalid unless the text validates against the CycloneDX 1.6 JSON schema."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomInvalid(f"the SBOM does not validate against CycloneDX {SPEC}: {error}")


def write_sbom(path: Path) -> dict[str, Any]:
    """Write the environment's SBOM; returns a summary (components, licences not OSI-approved)."""
    text = sbom_json(build_bom())
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
    }
