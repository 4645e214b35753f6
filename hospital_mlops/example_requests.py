"""Real example requests: encounters from a model's own test period in the bundled extract.

Used by ``hmlops serve --print-example-request``, the demo round trip and the serving
benchmarks, so every example is a real de-identified encounter a clinician could see, never a
hand-made row. Identifiers are used only to count a patient's earlier admissions (what the EHR
sends as ``prior_encounters``) and never leave this function.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.catalog import load_catalog
from hospital_mlops.features import DIABETES130_INPUTS
from hospital_mlops.normalize import HmacKey, normalize_extract
from hospital_mlops.scoring import PRIOR_ENCOUNTERS
from hospital_mlops.sources.extract import default_extract, read_extract

SOURCE = "diabetes130"


def jsonable(value: Any) -> Any:
    """A pandas/numpy cell as the JSON value a client sends (missing → null)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def test_period(training: dict[str, Any]) -> tuple[int, int]:
    """The test period's encounter-order range from a version's training record."""
    test = next(p for p in training["split"] if p["period"] == "test")
    return int(test["start"]), int(test["end"])


def example_instances(period: tuple[int, int], n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` real encounters from the order range ``period`` (inclusive), as v1 instances."""
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
    chosen = np.random.default_rng(seed).choice(
        in_period, size=min(n, len(in_period)), replace=False
    )
    chosen.sort()
    # A throwaway key: identifiers are dropped by normalization; nothing here needs tokens.
    key = HmacKey(secrets.token_bytes(32), False)
    normalized, _ = normalize_extract({"encounters": raw.iloc[chosen]}, spec, key)
    rows = normalized["encounters"].reset_index(drop=True)
    return [
        {
            **{c: jsonable(rows.at[i, c]) for c in DIABETES130_INPUTS},
            PRIOR_ENCOUNTERS: int(earlier.iloc[pos]),
        }
        for i, pos in enumerate(chosen)
    ]


def registered_examples(model: str, ref: str, n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """Real encounters from the test period of a registered version (``NAME``, ``REF``)."""
    from hospital_mlops.governance import registry

    version = registry._resolve(registry.client(), model, ref)
    return example_instances(test_period(registry._training_record(version)), n, seed)
