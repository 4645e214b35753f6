"""Issue 22's rule: no module outside the definitions of the feature sets and the sources names a
source or a use case. Serving, drift, monitoring, rollout, the CDS service, the batch path,
lineage, governance, the command line and the pipelines are keyed by the configuration and the
feature set, so a new use case or source is added without editing any of them."""

from __future__ import annotations

import re
from pathlib import Path

from hospital_mlops.data.catalog import load_catalog
from hospital_mlops.governance.config import use_cases_by_model
from hospital_mlops.use_case import load_use_cases

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("hospital_mlops", "serving", "components", "pipelines")
# Where the names belong, and why:
DEFINITIONS = (
    "hospital_mlops/features/",  # the feature sets, their serving recipes and subgroup maps
    "hospital_mlops/data/sources/",  # the sources: generators, fault scenarios
    # each feature set's FHIR mapping (its ServingRecipe names it) and the readmission mapping's
    # example patient, the inverse of that mapping
    "hospital_mlops/ehr/fhir_readmission_inputs.py",
    "hospital_mlops/ehr/fhir_admission_inputs.py",
    "hospital_mlops/ehr/fhir_examples.py",
    # `make demo`: a scripted story of the two bundled use cases, a user of the platform as the
    # tutorial's toy test is
    "hospital_mlops/cli/demo.py",
    "hospital_mlops/cli/demo_story.py",
    "hospital_mlops/cli/demo_use_case.py",
)


def _names() -> set[str]:
    cases = load_use_cases().values()
    return {
        *load_catalog().sources,
        *(case.id for case in cases),
        *use_cases_by_model(),
    }


def test_no_generic_module_names_a_source_or_a_use_case() -> None:
    names = _names()
    assert {"diabetes130", "synthetic", "post_acute_at_admission"} <= names
    # a name as a string literal, a module path or an identifier, not an English word in prose
    quoted = "|".join(re.escape(n) for n in names)
    # names that are no English word (with "_", "-" or a digit) also as bare identifiers
    distinct = "|".join(re.escape(n) for n in names if "_" in n or "-" in n or n[-1].isdigit())
    pattern = re.compile(rf"""["'.](?:{quoted})["'.:@/]|\b(?:{distinct})\b""")
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            if relative.startswith(DEFINITIONS):
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{relative}:{n}: {line.strip()[:100]}")
    assert not found, "\n".join(found)
