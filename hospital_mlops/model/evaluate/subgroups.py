"""Subgroup performance with CIs and ratios to a reference group.

Point estimates per group come from fairlearn's ``MetricFrame``; intervals (for the metric and
for its ratio to the reference group) come from the same patient-cluster bootstrap as the whole
slice, so a ratio's interval accounts for both groups being resampled together.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import MetricFrame, selection_rate, true_positive_rate
from sklearn.metrics import precision_score, roc_auc_score

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.model.evaluate.bootstrap import ClusterBootstrap
from hospital_mlops.use_case import Subgroup, SubgroupPolicy


class SubgroupError(ValueError):
    """A declared subgroup column is missing from the evaluation slice."""


def group_labels(frame: pd.DataFrame, name: str, sub: Subgroup) -> pd.Series:
    if sub.column not in frame.columns:
        raise SubgroupError(
            f"subgroup {name!r} needs column {sub.column!r}, which is not in the test slice "
            f"(columns: {sorted(frame.columns)})"
        )
    values = frame[sub.column]
    if sub.bands is not None:
        edges = sub.bands
        labels = [f"{edges[i]:g}-{edges[i + 1]:g}" for i in range(len(edges) - 1)]
        banded = pd.cut(values.astype("float64"), bins=edges, right=False, labels=labels)
        return banded.astype(object).where(banded.notna(), "missing").astype(str)
    as_text = values.astype(object).where(values.notna(), "missing").astype(str)
    return as_text.map(lambda v: sub.labels.get(v, v))


def _observed_to_expected(y: np.ndarray, risk: np.ndarray) -> float:
    return float(np.sum(y) / np.sum(risk))


def _auroc_or_nan(y: np.ndarray, risk: np.ndarray) -> float:
    return float(roc_auc_score(y, risk)) if len(np.unique(y)) == 2 else float("nan")


def _point_estimates(
    y: np.ndarray, risk: np.ndarray, alert: np.ndarray, groups: pd.Series
) -> pd.DataFrame:
    by_decision = MetricFrame(
        metrics={
            "sensitivity": true_positive_rate,
            "selection_rate": selection_rate,
            "ppv": lambda t, p: precision_score(t, p, zero_division=np.nan),
        },
        y_true=y,
        y_pred=alert,
        sensitive_features=groups.to_numpy(),
    ).by_group
    by_score = MetricFrame(
        metrics={"auroc": _auroc_or_nan, "observed_to_expected": _observed_to_expected},
        y_true=y,
        y_pred=risk,
        sensitive_features=groups.to_numpy(),
    ).by_group
    return pd.concat([by_decision, by_score], axis=1)


SUBGROUP_METRICS = ("auroc", "sensitivity", "ppv", "selection_rate", "observed_to_expected")


def _replicates(
    y: np.ndarray, risk: np.ndarray, threshold: float, rows: np.ndarray, boot: ClusterBootstrap
) -> dict[str, np.ndarray]:
    """Every subgroup metric per bootstrap replicate, in one pass over the weights."""
    ys, rs = y[rows], risk[rows]
    scored = weighted.Scored.of(ys, rs)
    parts: dict[str, list[np.ndarray]] = {m: [] for m in SUBGROUP_METRICS}
    for w in boot.weights(rows):
        parts["auroc"].append(weighted.auroc(scored, w))
        parts["observed_to_expected"].append(weighted.observed_to_expected(ys, rs, w))
        at = weighted.at_threshold(ys, rs, threshold, w)
        for m in ("sensitivity", "ppv", "selection_rate"):
            parts[m].append(at[m])
    return {m: np.concatenate(v) for m, v in parts.items()}


def evaluate_subgroups(
    frame: pd.DataFrame,
    y: np.ndarray,
    risk: np.ndarray,
    threshold: float,
    declared: dict[str, Subgroup],
    policy: SubgroupPolicy,
    bootstrap: ClusterBootstrap,
) -> list[dict[str, Any]]:
    """One entry per (subgroup, group): size, events, metrics with CIs, ratios and flags."""
    alert = (risk >= threshold).astype(int)
    low, high = policy.ratio_bounds
    out: list[dict[str, Any]] = []
    for name, sub in declared.items():
        groups = group_labels(frame, name, sub)
        points = _point_estimates(y, risk, alert, groups)
        sizes = groups.value_counts()
        reference = str(sizes.index[0])  # the largest group
        replicates = {
            str(g): _replicates(y, risk, threshold, (groups == g).to_numpy(), bootstrap)
            for g in sizes.index
        }
        for group in sorted(sizes.index, key=str):
            rows = (groups == group).to_numpy()
            events = int(y[rows].sum())
            assessable = rows.sum() >= policy.min_group_rows and events >= policy.min_group_events
            entry: dict[str, Any] = {
                "subgroup": name,
                "column": sub.column,
                "group": str(group),
                "reference": reference,
                "rows": int(rows.sum()),
                "events": events,
                "assessable": bool(assessable),
                "metrics": {},
                "ratios": {},
                "flags": [],
            }
            for m in SUBGROUP_METRICS:
                values = replicates[str(group)][m]
                point = float(points.loc[group, m])
                entry["metrics"][m] = bootstrap.interval(point, values).as_dict()
                if m in policy.metrics and group != reference:
                    ref_point = float(points.loc[reference, m])
                    ratio = point / ref_point if ref_point else float("nan")
                    with np.errstate(invalid="ignore", divide="ignore"):
                        ratio_values = values / replicates[reference][m]
                    entry["ratios"][m] = bootstrap.interval(ratio, ratio_values).as_dict()
                    if assessable and np.isfinite(ratio) and not (low <= ratio <= high):
                        entry["flags"].append(m)
            out.append(entry)
    return out


def flag_keys(subgroups: list[dict[str, Any]]) -> list[str]:
    """Flags as the keys a justification is written under: ``<subgroup>=<group>:<metric>``."""
    return [f"{s['subgroup']}={s['group']}:{m}" for s in subgroups for m in s["flags"]]
