"""The synthetic source's part of bench_drift_alarms.py: a long no-fault stream, and the fault
scenarios of hospital_mlops/data/faults.py as a serving detector would meet them.

**The serving view.** A model at discharge sees what the EHR holds at that moment, through an
endpoint that validates what it is sent. So every frame here, clean or faulty, is built the same
way from the extract's tables:

* the tables are normalized (types, site time zones to UTC, units, tokens) as the pipeline does;
* a vital or lab counts only if it was recorded by the encounter's discharge (a result that
  reaches the EHR later is not there to be sent);
* a request the endpoint would refuse with a 4xx (a number sent as text, an observation dated
  after the scoring time) does not reach the window; it is counted as rejected;
* a field the feed no longer carries under its name (renamed, dropped) reaches the model empty.

The stream: one seeded extract over five years, in discharge order; its first year is dropped
(the history features, such as admissions in the prior year, fill up over the first year) and
its last 60 days (outcomes not yet observable). The model trains on the next
``TRAIN_ENCOUNTERS`` (``VALIDATION_ENCOUNTERS`` more for early stopping); the thresholds are
calibrated on the next ``BASELINE_WINDOWS`` windows; every later window is the held-back stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hospital_mlops.data.catalog import SourceSpec, load_catalog
from hospital_mlops.data.faults import SCENARIOS
from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.synthetic.tables import generate_tables
from hospital_mlops.features import compute_synthetic, feature_set_for
from hospital_mlops.model.train import train_risk_model
from hospital_mlops.use_case import TrainingConfig

ENCOUNTERS = 700_000
YEARS = 5
SEED = 23
TRAIN_ENCOUNTERS = 120_000
VALIDATION_ENCOUNTERS = 30_000
BASELINE_WINDOWS = 30
BURN_IN_DAYS = 365
TAIL_DAYS = 60
KEY = HmacKey(b"s" * 40, False)

Tables = dict[str, pd.DataFrame]


def _restore_columns(raw: Tables, clean: Tables) -> tuple[Tables, list[str]]:
    """A renamed or dropped field reaches the model empty: put the catalogued column back as
    nulls (a renamed one's new name is dropped) and say which it was."""
    out, restored = dict(raw), []
    for name, frame in clean.items():
        missing = [c for c in frame.columns if c not in raw[name].columns]
        if missing:
            extra = [c for c in raw[name].columns if c not in frame.columns]
            out[name] = raw[name].drop(columns=extra).assign(**{c: None for c in missing})
            out[name] = out[name][list(frame.columns)].astype(
                {c: frame[c].dtype for c in missing if frame[c].dtype.kind in "fiu"}
                | {c: "float64" for c in missing if frame[c].dtype.kind in "iu"}
            )
            restored += [f"{name}.{c}" for c in missing]
    return out, restored


def _refused_ids(raw: Tables, spec: SourceSpec) -> tuple[Tables, set[str]]:
    """The encounters whose request the endpoint refuses with a field-level 4xx, as our
    diabetes130 endpoint does (hospital_mlops/model/scoring.py): a number sent as text, a value
    outside the catalogued range, a category outside the catalogued list. Text numbers are read
    back so that the rest of the extract can still be built."""
    out, refused = dict(raw), set()
    for name in ("encounters", "vitals", "labs"):
        frame, columns = raw[name], spec.tables[name].columns
        bad = pd.Series(False, index=frame.index)
        for column, cspec in columns.items():
            if column not in frame.columns:
                continue
            values = frame[column]
            if cspec.type == "float" and values.dtype == object:
                bad |= values.map(lambda v: isinstance(v, str))
                values = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
                frame = frame.assign(**{column: values})
            if cspec.range is not None and values.dtype.kind == "f":
                low = cspec.range.min if cspec.range.min is not None else -np.inf
                high = cspec.range.max if cspec.range.max is not None else np.inf
                bad |= values.notna() & ((values < low) | (values > high))
            if cspec.allowed is not None:
                bad |= values.notna() & ~values.astype(str).isin(cspec.allowed)
        refused |= set(frame.loc[bad, "encounter_id"].astype(str))
        out[name] = frame
    return out, refused


def serving_view(raw: Tables, clean: Tables) -> tuple[pd.DataFrame, set[str]]:
    """The features a serving endpoint would score from ``raw`` (see the module's docstring),
    and the encounter tokens whose requests it would refuse."""
    spec = load_catalog().source("synthetic")
    raw, _ = _restore_columns(raw, clean)
    raw, refused_ids = _refused_ids(raw, spec)
    tables, _ = normalize_extract(raw, spec, KEY)
    encounters = tables["encounters"].drop_duplicates("encounter_token")
    discharge = encounters.set_index("encounter_token")["discharge_time"]
    refused = _tokens_of(raw, spec, refused_ids) if refused_ids else set()
    for name in ("vitals", "labs"):
        frame = tables[name]
        at = frame["encounter_token"].map(discharge)
        future = frame["event_time"] > at  # an observation dated after the scoring time
        refused |= set(frame.loc[future, "encounter_token"])
        tables[name] = frame.loc[(frame["recorded_time"] <= at) & ~future]
    # An encounter resent under another spelling of its ID is the same encounter requested
    # twice: its features are built once and it reaches the window twice.
    tokens = tables["encounters"]["encounter_token"]
    resent = tokens.duplicated()
    tables["encounters"] = tables["encounters"].loc[~resent]
    features, _ = compute_synthetic(tables)
    again = features["encounter_token"].isin(set(tokens[resent]))
    return pd.concat([features, features.loc[again]], ignore_index=True), refused


def _tokens_of(raw: Tables, spec: SourceSpec, encounter_ids: set[str]) -> set[str]:
    """The tokens of raw encounter IDs, through the same normalization (a one-table extract)."""
    encounters = raw["encounters"]
    picked = encounters[encounters["encounter_id"].astype(str).isin(encounter_ids)]
    if picked.empty:
        return set()
    empty = {k: v.iloc[0:0] for k, v in raw.items()}
    tables, _ = normalize_extract(
        {**empty, "encounters": picked, "patients": raw["patients"]}, spec, KEY
    )
    return set(tables["encounters"]["encounter_token"])


@dataclass
class Stream:
    """The synthetic stream, split and scored."""

    raw: Tables
    baseline: pd.DataFrame  # the serving view of the clean extract, in discharge order, scored
    held_back: pd.DataFrame
    model: object
    names: list[str]

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        fs = feature_set_for("synthetic")
        return frame.assign(risk=self.model.predict_risk(frame, fs))  # type: ignore[attr-defined]


def build_stream(window: int) -> Stream:
    fs = feature_set_for("synthetic")
    raw = generate_tables(
        ENCOUNTERS, seed=SEED, start="2020-01-01", days=YEARS * 365, open_cohort=True
    )
    features, _ = serving_view(raw, raw)
    features = features.sort_values("discharge_time", kind="stable").reset_index(drop=True)
    first = features["discharge_time"].min() + pd.Timedelta(days=BURN_IN_DAYS)
    last = features["discharge_time"].max() - pd.Timedelta(days=TAIL_DAYS)
    kept = features[(features["discharge_time"] >= first) & (features["discharge_time"] <= last)]
    kept = kept.reset_index(drop=True)
    train = kept.iloc[:TRAIN_ENCOUNTERS]
    validation = kept.iloc[TRAIN_ENCOUNTERS : TRAIN_ENCOUNTERS + VALIDATION_ENCOUNTERS]
    model = train_risk_model(train, validation, fs, TrainingConfig(max_rounds=100))
    rest = kept.iloc[TRAIN_ENCOUNTERS + VALIDATION_ENCOUNTERS :].reset_index(drop=True)
    rest = rest.assign(risk=model.predict_risk(rest, fs))
    cut = BASELINE_WINDOWS * window
    baseline, held_back = rest.iloc[:cut], rest.iloc[cut:].reset_index(drop=True)
    return Stream(raw, baseline, held_back, model, [f.name for f in fs.features])


def scenario_injector(name: str) -> Callable[[Tables, np.random.Generator], Tables] | None:
    sources = SCENARIOS[name].sources
    return sources["synthetic"][0] if "synthetic" in sources else None


def synthetic_scenarios() -> list[str]:
    return [name for name, s in SCENARIOS.items() if "synthetic" in s.sources]
