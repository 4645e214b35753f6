"""Real example requests: encounters from a model's own test period in the bundled extract.

Used by ``hmlops serve --print-example-request``, the demo round trip and the serving
benchmarks, so every example is a real de-identified encounter a clinician could see, never a
hand-made row. Identifiers are used only to count a patient's earlier admissions (what the EHR
sends as ``prior_encounters``) and never leave this function.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import SourceSpec, load_catalog
from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import default_extract, read_extract
from hospital_mlops.data.splits import temporal_split
from hospital_mlops.features import ServedInputs
from hospital_mlops.use_case import SplitPolicy


def test_period(training: dict[str, Any]) -> tuple[int, int]:
    """The test period's encounter-order range from a version's training record."""
    test = next(p for p in training["split"] if p["period"] == "test")
    return int(test["start"]), int(test["end"])


def period_instances(
    served: ServedInputs,
    raw_tables: Mapping[str, pd.DataFrame],
    spec: SourceSpec,
    policy: SplitPolicy,
    period: str,
    choose: Callable[[pd.DataFrame], pd.DataFrame],
) -> list[dict[str, Any]]:
    """Request instances, for any served feature set, of the encounters ``choose`` picks from
    one period (``train``, ``validation`` or ``test``) of the set's temporal split.

    The extract goes through the pipeline's own de-identification (``normalize_extract``, with a
    throwaway key: no token survives this function), feature code and split, so the period and
    every derived input (the earlier-admission count) are exactly those the model was trained
    and tested with."""
    normalized, _ = normalize_extract(raw_tables, spec, HmacKey(secrets.token_bytes(32), False))
    fs = served.feature_set
    frame, _ = fs.compute(normalized)
    picked = choose(getattr(temporal_split(frame, policy, fs.label), period))
    encounters = normalized["encounters"].set_index("encounter_token")
    rows = encounters.loc[picked["encounter_token"]]
    return [
        served.instance_of(features, encounter)
        for (_, features), (_, encounter) in zip(picked.iterrows(), rows.iterrows(), strict=True)
    ]


def test_period_instances(
    served: ServedInputs, policy: SplitPolicy, n: int = 5, seed: int = 7
) -> list[dict[str, Any]]:
    """``n`` real encounters (a seeded draw, in time order) from the test period of the bundled
    extract of the set's source, as request instances."""
    source = served.feature_set.source
    spec = load_catalog().source(source)
    raw = read_extract(default_extract(source, spec), spec)

    def draw(test: pd.DataFrame) -> pd.DataFrame:
        if len(test) == 0:
            raise ValueError("the test period is empty")
        chosen = np.random.default_rng(seed).choice(len(test), min(n, len(test)), replace=False)
        return test.iloc[np.sort(chosen)]

    return period_instances(served, raw, spec, policy, "test", draw)
