"""What a fault scenario is made of, shared by the per-source scenario modules: the injector
type, where a scenario must be caught, and the injectors every source can use (a renamed or
dropped column, an empty delivery). ``hospital_mlops.data.faults`` gathers the scenarios."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

Tables = dict[str, pd.DataFrame]
Injector = Callable[[Tables, np.random.Generator], Tables]


@dataclass(frozen=True)
class Expected:
    """Where a scenario must be caught: layer, table (batch) and column of the first failure."""

    layer: str
    table: str
    column: str
    expectation: str


# a source's scenarios: scenario name → how it is injected there and where it must be caught
SourceFaults = dict[str, tuple[Injector, Expected]]


def rows(df: pd.DataFrame, rng: np.random.Generator, fraction: float) -> np.ndarray:
    n = max(1, round(len(df) * fraction))
    return np.sort(rng.choice(len(df), size=min(n, len(df)), replace=False))


def with_tables(tables: Tables, **changes: pd.DataFrame) -> Tables:
    return {**tables, **changes}


def renamed(table: str, old: str, new: str) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        return with_tables(t, **{table: t[table].rename(columns={old: new})})

    return inject


def dropped(table: str, column: str) -> Injector:
    def inject(t: Tables, rng: np.random.Generator) -> Tables:
        return with_tables(t, **{table: t[table].drop(columns=[column])})

    return inject


def empty(t: Tables, rng: np.random.Generator) -> Tables:
    return {name: df.iloc[0:0] for name, df in t.items()}
