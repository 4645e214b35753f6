"""Named fault scenarios: the things real hospital feeds do, injected into a clean extract.

Each scenario rewrites an extract into a new one (like a bad delivery would arrive) and declares
where the pipeline must catch it and on which table and column. Tests run every scenario through
the pipeline and hold it to that declaration.

The scenarios are named here; how each is injected into a source, and where that source must
catch it, is the source's own: ``hospital_mlops.data.sources.<source>.faults`` (``FAULTS``, and
``write_extract`` for a source that is not CSV), found by the source's name, so adding a source
adds its scenarios without editing this module.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np

from hospital_mlops.data import sources
from hospital_mlops.data.catalog import SourceSpec
from hospital_mlops.data.fault_injection import Expected, Injector
from hospital_mlops.data.snapshots import sha256_path
from hospital_mlops.data.sources.extract import read_extract, write_csv_extract


class UnknownScenario(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    caught_at: str
    sources: dict[str, tuple[Injector, Expected]]


# name, what the feed does, the layer that must catch it
KINDS: tuple[tuple[str, str, str], ...] = (
    (
        "unit_change",
        "glucose sent in mmol/L but still labelled mg/dL (undeclared unit change)",
        "validate",
    ),
    (
        "assay_shift",
        "a recalibrated assay reads creatinine +0.6 mg/dL high (or lab counts +30 in a count feed)",
        "validate",
    ),
    (
        "diagnoses_truncated",
        "an interface upgrade sends only the principal diagnosis (diagnosis count 1)",
        "validate",
    ),
    (
        "duplicates",
        "encounters resent with a different ID spelling (duplicates behind formatting)",
        "validate",
    ),
    ("late_arriving", "5% of lab results reach the EHR 5-15 days after collection", "validate"),
    (
        "schema_rename",
        "a column is renamed in the feed (heart_rate→hr; A1Cresult→a1c_result)",
        "ingest",
    ),
    ("schema_drop", "a column disappears from the feed", "ingest"),
    ("schema_retype", "a numeric column arrives as text ('7.2 ', '3 days')", "ingest"),
    ("out_of_range", "impossible values (heart rate 400/min; length of stay 45 days)", "validate"),
    (
        "timezone_shift",
        "one site's monitors send local time labelled UTC (events after they were recorded)",
        "validate",
    ),
    ("patient_merge", "the EMPI merge list is missing: one person stays two MRNs", "validate"),
    (
        "null_burst",
        "a field goes blank for a whole site or slice (diagnosis at EAST; race for 20%)",
        "validate",
    ),
    (
        "new_category",
        "a category the catalog does not know (service line TELEMETRY; admission source 99)",
        "validate",
    ),
    ("empty_extract", "the delivery has headers and no rows", "ingest"),
)


def _source_modules() -> dict[str, ModuleType]:
    """Each source package's ``faults`` module, by the package's (the source's) name."""
    found = {}
    for info in pkgutil.iter_modules(sources.__path__):
        if info.ispkg:
            try:
                found[info.name] = importlib.import_module(f"{sources.__name__}.{info.name}.faults")
            except ModuleNotFoundError as exc:
                if exc.name != f"{sources.__name__}.{info.name}.faults":
                    raise
    return found


def _scenarios() -> dict[str, Scenario]:
    modules = _source_modules()
    named = {name for name, _, _ in KINDS}
    for source, module in modules.items():
        unknown = sorted(set(module.FAULTS) - named)
        if unknown:
            raise UnknownScenario(f"source {source} injects unnamed scenarios: {unknown}")
    return {
        name: Scenario(
            name,
            description,
            caught_at,
            {s: m.FAULTS[name] for s, m in modules.items() if name in m.FAULTS},
        )
        for name, description, caught_at in KINDS
    }


SCENARIOS: dict[str, Scenario] = _scenarios()


def scenario(name: str, source: str) -> tuple[Injector, Expected]:
    if name not in SCENARIOS:
        raise UnknownScenario(f"unknown scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}")
    s = SCENARIOS[name]
    if source not in s.sources:
        raise UnknownScenario(
            f"scenario {name!r} does not apply to source {source!r} (it applies to "
            f"{sorted(s.sources)}): the source has no such field"
        )
    return s.sources[source]


def materialize_scenario(
    name: str, source: str, spec: SourceSpec, extract: Path, root: Path, seed: int = 7
) -> Path:
    """Write the faulty extract next to the clean one and return its path (deterministic)."""
    inject, _ = scenario(name, source)
    target = root / f"{source}-{name}-{sha256_path(extract)[:12]}-s{seed}"
    if target.exists():
        return target
    staging = root / f".staging-{target.name}"
    tables = inject(read_extract(extract, spec), np.random.default_rng(seed))
    if spec.format == "csv":
        write_csv_extract(tables, spec, staging)
    else:
        # a source in another format writes its own extracts (its faults module's write_extract)
        writer = getattr(_source_modules().get(source), "write_extract", None)
        if writer is None:
            raise UnknownScenario(f"source {source!r} ({spec.format}) names no extract writer")
        writer(tables, staging, {"scenario": name, "parent_extract": str(extract)})
    staging.rename(target)
    return target
