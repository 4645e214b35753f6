"""The readmission demo's stream: real diabetes130 encounters of an order range, as the
readmission model's v1 instances, with each one's real 30-day readmission, optionally with a
fault scenario injected first as a feed would deliver it. The demo story, the example FHIR
patient and the readmission benchmarks draw their requests from here; any other model's
requests come from ``hospital_mlops.model.example_requests.period_instances`` (its own set's
split)."""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import load_catalog
from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import default_extract, read_extract
from hospital_mlops.features.diabetes130 import DIABETES130_INPUTS
from hospital_mlops.features.served import PRIOR_ENCOUNTERS, jsonable

SOURCE = "diabetes130"


def example_instances(period: tuple[int, int], n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` real encounters from the order range ``period`` (inclusive), as v1 instances."""
    return labelled_instances(period, n, seed)[0]


def labelled_instances(
    period: tuple[int, int], n: int, seed: int, scenario: str | None = None, part: int = 0
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """As ``example_instances``, with each encounter's real 30-day readmission (1/0). With
    ``scenario``, the data issue's fault is injected into those encounters first, as a feed
    would deliver them (the monitoring demo's stream). ``part``: the same seed shuffles the
    period once, and part k takes its k-th ``n`` encounters, so parts never overlap."""
    spec = load_catalog().source(SOURCE)
    raw = read_extract(default_extract(SOURCE, spec), spec)["encounters"]
    ids = pd.to_numeric(raw["encounter_id"])
    order = ids.rank(method="dense").astype("int64") - 1
    earlier = (
        raw.assign(_id=ids).sort_values("_id").groupby("patient_nbr", sort=False).cumcount()
    ).reindex(raw.index)
    in_period = np.flatnonzero((order >= period[0]) & (order <= period[1]))
    if len(in_period) == 0:
        raise ValueError(f"no encounters in the order range {period}")
    shuffled = np.random.default_rng(seed).permutation(in_period)
    chosen = np.sort(shuffled[part * n : (part + 1) * n])
    if len(chosen) == 0:
        raise ValueError(f"the order range {period} has no part {part} of {n} encounters")
    tables = {"encounters": raw.iloc[chosen]}
    if scenario:
        from hospital_mlops.data.faults import scenario as fault

        inject, _ = fault(scenario, SOURCE)
        tables = inject(tables, np.random.default_rng(seed))
    labels = (tables["encounters"]["readmitted"].astype(str).str.strip() == "<30").to_numpy()
    # A throwaway key: identifiers are dropped by normalization; nothing here needs tokens.
    key = HmacKey(secrets.token_bytes(32), False)
    normalized, _ = normalize_extract(tables, spec, key)
    rows = normalized["encounters"].reset_index(drop=True)
    instances = [
        {
            **{c: jsonable(rows.at[i, c]) for c in DIABETES130_INPUTS},
            PRIOR_ENCOUNTERS: int(earlier.iloc[pos]),
        }
        for i, pos in enumerate(chosen)
    ]
    return instances, labels.astype("int64")
