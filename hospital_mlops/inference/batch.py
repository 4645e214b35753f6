"""Batch scoring: today's census scored by a registered model, written as its worklist.

The census is the newest stretch of the newest published feature snapshot of the model's own
feature set (one store holds every use case's snapshots): the last ``census_size`` encounters
on the use case's time axis, by default one day of admissions as the use case's capacity
declares it. The snapshot is re-hashed before it is read, and the model verifies its files as it
loads. The list (``worklist``) goes to a staging directory first and is moved into place whole,
so a reader never sees half a worklist.

On a laptop the census comes from the bundled extract's published snapshot (whose rows also
carry their outcome, which is never read here); at a hospital the same code reads a snapshot of
current inpatients.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.data.lineage import utc_now
from hospital_mlops.data.published_index import read_entries
from hospital_mlops.data.snapshots import read_tables, verify_snapshot
from hospital_mlops.data.splits import time_axis
from hospital_mlops.inference.worklist import Worklist, build_worklist, worklist_csv, worklist_html
from hospital_mlops.use_case import UseCase

SNAPSHOT_TABLE = "features"


class BatchError(ValueError):
    """The batch cannot run as asked: no snapshot of the model's feature set, no capacity."""


@dataclass(frozen=True)
class Census:
    frame: pd.DataFrame
    snapshot: dict[str, Any]  # the publish index's entry


def newest_snapshot_of(store: Path, feature_set_version: str) -> dict[str, Any]:
    entries = read_entries(store)
    mine = [e for e in entries if e.get("feature_set_version") == feature_set_version]
    if not mine:
        found = sorted({str(e.get("feature_set_version")) for e in entries}) or ["none"]
        raise BatchError(
            f"no published snapshot in {store} has feature set {feature_set_version}; "
            f"published: {', '.join(found)} (run the pipeline for this use case first)"
        )
    return max(mine, key=lambda e: str(e["published_at"]))


def census_of(frame: pd.DataFrame, use_case: UseCase, source: str, size: int) -> pd.DataFrame:
    """The newest ``size`` encounters on the use case's time axis for ``source``."""
    if size < 1:
        raise BatchError(f"the census must hold at least one encounter, not {size}")
    axis = time_axis(frame, use_case.for_source(source).split)
    newest = np.argsort(axis, kind="stable")[-size:]
    return frame.iloc[np.sort(newest)].reset_index(drop=True)


def capacity_of(use_case: UseCase, override: int | None) -> tuple[int, int]:
    """(worklist size, admissions a day) from the use case's primary threshold's capacity."""
    declared = use_case.thresholds.uses[use_case.thresholds.primary].capacity
    if override is not None:
        size = override
    elif declared is not None:
        size = declared.worklist_size
    else:
        raise BatchError(
            f"use case {use_case.id!r} declares no worklist capacity for its primary threshold "
            f"{use_case.thresholds.primary!r}; give the worklist size"
        )
    per_day = round(declared.admissions_per_day) if declared is not None else 0
    return size, per_day


def read_census(store: Path, feature_set_version: str) -> Census:
    entry = newest_snapshot_of(store, feature_set_version)
    directory = Path(entry["path"])
    verify_snapshot(directory)  # a snapshot altered since it was published is refused
    return Census(read_tables(directory, [SNAPSHOT_TABLE])[SNAPSHOT_TABLE], entry)


def write_worklist(worklist: Worklist, summary: dict[str, Any], title: str, out: Path) -> Path:
    """The three files, staged beside ``out`` and moved into place whole."""
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        raise BatchError(f"{out} exists: a worklist is never overwritten; choose a new --out")
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / artifacts.WORKLIST_CSV).write_text(worklist_csv(worklist), encoding="utf-8")
        page = worklist_html(worklist, title)
        (staging / artifacts.WORKLIST_HTML).write_text(page, encoding="utf-8")
        text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        (staging / artifacts.WORKLIST_SUMMARY).write_text(text, encoding="utf-8")
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def score_census(
    model: str,
    ref: str,
    store: Path,
    out: Path,
    *,
    census_size: int | None = None,
    capacity: int | None = None,
) -> dict[str, Any]:
    """Score the census with ``model@ref`` and write its worklist to ``out``; returns the
    summary (also written as ``worklist.json``)."""
    from hospital_mlops.governance import registry
    from hospital_mlops.inference.served_model import serving_setup

    loaded = registry.load_risk_model(model, ref)
    setup = serving_setup(loaded.model, loaded.training, loaded.tags)
    fs, use_case = setup.feature_set, setup.use_case
    size, per_day = capacity_of(use_case, capacity)
    census_size = census_size or per_day or 0
    if not census_size:
        raise BatchError(f"use case {use_case.id!r} declares no daily admissions; give the census")
    census = read_census(store, fs.version)
    frame = census_of(census.frame, use_case, fs.source, census_size)
    day = f"census of {utc_now()[:10]}"
    worklist = build_worklist(
        frame, loaded.model, fs, size, day=day, model_name=f"{model}/{loaded.version}"
    )
    summary = {
        "model": model,
        "version": loaded.version,
        "use_case": use_case.id,
        "feature_set_version": fs.version,
        "snapshot_sha256": census.snapshot["sha256"],
        "census": worklist.census,
        "capacity": worklist.capacity,
        "listed": len(worklist.entries),
        "threshold": setup.threshold,
        "at_or_above_threshold": int((worklist.entries["risk"] >= setup.threshold).sum()),
        "scored_at": utc_now(),
        "files": [artifacts.WORKLIST_CSV, artifacts.WORKLIST_HTML, artifacts.WORKLIST_SUMMARY],
    }
    title = f"{use_case.title}: worklist"
    summary["out"] = str(write_worklist(worklist, summary, title, out))
    return summary
