"""The feature-set type: a list of ``FeatureDef`` (name, kind, allowed values or range, clinical
wording for reason codes) and one function that computes them from normalized tables.

A set's version is a hash of its definitions, its own module's code and the shared code
(``SHARED_CODE``), so any change to what one of its features means changes the version recorded
in every manifest, while an edit to another set leaves it alone.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Literal

import pandas as pd

Kind = Literal["numeric", "binary", "categorical"]
LABEL = "readmitted_30d"
READMISSION_WINDOW_DAYS = 30
HISTORY_DAYS = 365


@dataclass(frozen=True)
class FeatureDef:
    name: str
    kind: Kind
    clinical_wording: str
    allowed: tuple[str, ...] | None = None
    min_value: float | None = None
    max_value: float | None = None
    nullable: bool = False


# The code every feature set is computed with; a set's version also hashes its own module
# (where its ``compute`` lives) and no other set's.
SHARED_CODE = (
    "hospital_mlops.features.base",
    "hospital_mlops.features.groupings",
    "hospital_mlops.features.history",
)


@dataclass(frozen=True)
class FeatureSet:
    name: str
    source: str
    features: tuple[FeatureDef, ...]
    keys: tuple[str, ...]
    label: str
    compute: Callable[[Mapping[str, pd.DataFrame]], tuple[pd.DataFrame, dict[str, int]]]

    @property
    def version(self) -> str:
        payload = {
            "name": self.name,
            "features": [asdict(f) for f in self.features],
            "keys": list(self.keys),
            "label": self.label,
            "code": [
                inspect.getsource(importlib.import_module(module))
                for module in (*SHARED_CODE, self.compute.__module__)
            ],
        }
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        return f"{self.name}@{digest[:12]}"

    @property
    def columns(self) -> list[str]:
        return [*self.keys, *(f.name for f in self.features), self.label]
