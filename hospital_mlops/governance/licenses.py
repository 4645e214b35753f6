"""An inventory of every installed distribution's licence, flagging what is not OSI-approved.

Read from package metadata, in order of reliability: the PEP 639 ``License-Expression`` (SPDX),
the ``License :: OSI Approved`` trove classifiers, then the free-text ``License`` field when it is
a recognizable SPDX identifier. Anything else is flagged for a human to review rather than
guessed. alibi and alibi-detect declare the Business Source License 1.1: source-available, not
open source; production use needs a licence from Seldon (non-profit educational use excepted).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict, dataclass
from importlib.metadata import Distribution, distributions
from pathlib import Path
from typing import Any

# SPDX identifiers on the OSI-approved list that Python packages commonly declare.
OSI_SPDX = {
    "0BSD", "AFL-3.0", "Apache-2.0", "Artistic-2.0", "BSD-1-Clause", "BSD-2-Clause",
    "BSD-3-Clause", "BSL-1.0", "CDDL-1.0", "EPL-1.0", "EPL-2.0", "GPL-2.0", "GPL-2.0-only",
    "GPL-2.0-or-later", "GPL-3.0", "GPL-3.0-only", "GPL-3.0-or-later", "HPND", "ISC",
    "LGPL-2.1", "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0", "LGPL-3.0-only",
    "LGPL-3.0-or-later", "MIT", "MIT-0", "MPL-1.1", "MPL-2.0", "NCSA", "PSF-2.0", "Python-2.0",
    "UPL-1.0", "Unlicense", "Zlib", "OFL-1.1", "CNRI-Python", "Unicode-3.0",
}  # fmt: skip
# Free-text names seen in the wild for the same licences.
ALIASES = {
    "apache 2.0": "Apache-2.0",
    "apache license 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0",
    "apache-2": "Apache-2.0",
    "bsd": "BSD-3-Clause",
    "bsd license": "BSD-3-Clause",
    "bsd-3": "BSD-3-Clause",
    "3-clause bsd license": "BSD-3-Clause",
    "new bsd": "BSD-3-Clause",
    "mit license": "MIT",
    "psf": "PSF-2.0",
}
NOT_OPEN = re.compile(r"business source|\bbusl\b|proprietary|commercial|non-commercial", re.I)


@dataclass(frozen=True)
class LicenceRecord:
    name: str
    version: str
    licence: str
    osi_approved: bool | None  # None: could not be determined from metadata
    evidence: str
    flag: str  # "" when OSI-approved


def _spdx_ids(expression: str) -> list[str]:
    tokens = re.split(r"\s+(?:AND|OR|WITH)\s+|[()]", expression)
    return [t.strip() for t in tokens if t and t.strip()]


def _canonical(token: str) -> str:
    return ALIASES.get(token.strip().lower(), token.strip())


def _first(values: list[Any] | None) -> str:
    return str(values[0]).strip() if values else ""


def classify(dist: Distribution) -> LicenceRecord:
    meta = dist.metadata
    name, version = meta["Name"], dist.version
    expression = _first(meta.get_all("License-Expression"))
    text = _first(meta.get_all("License"))
    classifiers = [c for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    first_line = text.splitlines()[0][:80] if text else ""

    def record(licence: str, osi: bool | None, evidence: str) -> LicenceRecord:
        flag = "" if osi else ("not OSI-approved" if osi is False else "unknown: review")
        return LicenceRecord(name, version, licence, osi, evidence, flag)

    if NOT_OPEN.search(expression) or NOT_OPEN.search(first_line):
        return record(expression or first_line, False, "declared licence")
    if expression:
        ids = [_canonical(t) for t in _spdx_ids(expression)]
        return record(expression, all(i in OSI_SPDX for i in ids), "License-Expression")
    osi = [c.split(" :: ")[-1] for c in classifiers if "OSI Approved" in c]
    if osi:
        return record("; ".join(osi), True, "trove classifier")
    if any("Proprietary" in c for c in classifiers):
        return record(first_line or "proprietary", False, "trove classifier")
    if first_line:
        ids = [_canonical(t) for t in _spdx_ids(first_line)]
        if ids and all(i in OSI_SPDX for i in ids):
            return record(first_line, True, "License field")
        return record(first_line, None, "License field")
    return record("not declared", None, "none")


def inventory() -> list[LicenceRecord]:
    seen: dict[str, LicenceRecord] = {}
    for dist in distributions():
        rec = classify(dist)
        seen.setdefault(rec.name.lower(), rec)
    return sorted(seen.values(), key=lambda r: r.name.lower())


def write_inventory(records: list[LicenceRecord], path: Path) -> Path:
    """JSON when the path ends in .json, CSV otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps([asdict(r) for r in records], indent=2) + "\n")
        return path
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(LicenceRecord.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(r) for r in records)
    return path
