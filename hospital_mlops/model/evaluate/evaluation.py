"""The evaluation of one model on one held-out slice, as a JSON-able dictionary.

Everything here is recomputable from the saved test predictions (encounter token, patient token,
label, score, comparator score and the subgroup columns): ``evaluate_predictions`` is the only
entry point, and it takes nothing else besides the pre-declared policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.data.splits import check_slice
from hospital_mlops.model.evaluate import weighted
from hospital_mlops.model.evaluate.bootstrap import ClusterBootstrap
from hospital_mlops.model.evaluate.columns import COMPARATOR_SCORE, LABEL, SCORE
from hospital_mlops.model.evaluate.subgroups import evaluate_subgroups, flag_keys
from hospital_mlops.use_case import SourceUse, UseCase


def thresholds_from_validation(risk: np.ndarray, use_case: UseCase) -> dict[str, float]:
    """The risk above which each use's declared share of discharges alerts, fixed on the
    validation slice so the test slice only reports, never tunes."""
    return {
        name: float(np.quantile(risk, 1 - use.alerts_per_100 / 100))
        for name, use in use_case.thresholds.uses.items()
    }


def reliability(y: np.ndarray, risk: np.ndarray, bin_of: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for b in range(int(bin_of.max()) + 1):
        m = bin_of == b
        n = int(m.sum())
        if not n:
            continue
        observed = float(y[m].mean())
        # Wilson interval: honest at small counts and rates near 0
        z = 1.96
        centre = (observed + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(observed * (1 - observed) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        rows.append(
            {
                "bin": b,
                "rows": n,
                "mean_risk": round(float(risk[m].mean()), 6),
                "observed_rate": round(observed, 6),
                "observed_ci": [round(centre - half, 6), round(centre + half, 6)],
            }
        )
    return rows


def decision_curve(
    y: np.ndarray, risk: np.ndarray, low: float, high: float
) -> list[dict[str, float]]:
    """Net benefit per threshold probability against treating everyone and no one."""
    n = len(y)
    prevalence = float(y.mean())
    out = []
    for pt in np.round(np.arange(low, high + 1e-9, 0.01), 2):
        alert = risk >= pt
        tp = float((alert & (y == 1)).sum())
        fp = float((alert & (y == 0)).sum())
        odds = pt / (1 - pt)
        out.append(
            {
                "threshold": float(pt),
                "model": round(tp / n - fp / n * odds, 6),
                "treat_all": round(prevalence - (1 - prevalence) * odds, 6),
                "treat_none": 0.0,
            }
        )
    return out


def evaluate_predictions(
    predictions: pd.DataFrame,
    thresholds: dict[str, float],
    use_case: UseCase,
    source_use: SourceUse,
    slices: dict[str, pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """Discrimination, calibration, comparator, thresholds, subgroups and decision curve with
    patient-cluster bootstrap CIs, from a predictions frame alone."""
    check_slice("test", predictions, LABEL)
    policy = use_case.evaluation
    y = predictions[LABEL].to_numpy(dtype="float64")
    risk = predictions[SCORE].to_numpy(dtype="float64")
    comparator = predictions[COMPARATOR_SCORE].to_numpy(dtype="float64")
    boot = ClusterBootstrap.over(
        predictions["patient_token"], policy.bootstrap_replicates, policy.seed, policy.ci_level
    )
    scored = weighted.Scored.of(y, risk)
    scored_comparator = weighted.Scored.of(y, comparator)
    bin_of = weighted.quantile_bins(risk, policy.calibration_bins)

    model_auc = boot.replicate_values(lambda w: weighted.auroc(scored, w))
    comp_auc = boot.replicate_values(lambda w: weighted.auroc(scored_comparator, w))
    ones = np.ones((1, len(y)))
    auc_point = float(weighted.auroc(scored, ones)[0])
    comp_point = float(weighted.auroc(scored_comparator, ones)[0])

    primary = use_case.thresholds.primary
    at_thresholds = {}
    for name, threshold in thresholds.items():
        point = weighted.at_threshold(y, risk, threshold, ones)
        reps = np.concatenate(
            [
                np.vstack(list(weighted.at_threshold(y, risk, threshold, w).values())).T
                for w in boot.weights()
            ]
        )
        at_thresholds[name] = {
            "threshold": round(threshold, 6),
            "alerts_per_100_declared": use_case.thresholds.uses[name].alerts_per_100,
            **{
                metric: boot.interval(float(point[metric][0]), reps[:, i]).as_dict()
                for i, metric in enumerate(point)
            },
        }

    subgroups = evaluate_subgroups(
        predictions,
        y,
        risk,
        thresholds[primary],
        source_use.subgroups,
        use_case.subgroup_policy,
        boot,
    )
    result: dict[str, Any] = {
        "rows": len(y),
        "patients": boot.patients,
        "events": int(y.sum()),
        "event_rate": round(float(y.mean()), 6),
        "bootstrap": {
            "replicates": policy.bootstrap_replicates,
            "unit": "patient",
            "ci_level": policy.ci_level,
            "seed": policy.seed,
        },
        "discrimination": {
            "auroc": boot.interval(auc_point, model_auc).as_dict(),
            "auprc": boot.estimate(lambda w: weighted.auprc(scored, w)).as_dict(),
        },
        "calibration": {
            "ece": boot.estimate(lambda w: weighted.ece(y, risk, bin_of, w)).as_dict(),
            "slope": boot.estimate(lambda w: weighted.calibration_slope(y, risk, w)).as_dict(),
            "intercept": boot.estimate(
                lambda w: weighted.calibration_intercept(y, risk, w)
            ).as_dict(),
            "brier": boot.estimate(lambda w: weighted.brier(y, risk, w)).as_dict(),
            "observed_to_expected": boot.estimate(
                lambda w: weighted.observed_to_expected(y, risk, w)
            ).as_dict(),
            "bins": "equal-mass",
            "reliability": reliability(y, risk, bin_of),
        },
        "comparator": {
            "columns": source_use.comparator,
            "auroc": boot.interval(comp_point, comp_auc).as_dict(),
            "auroc_margin": boot.interval(auc_point - comp_point, model_auc - comp_auc).as_dict(),
        },
        "thresholds": at_thresholds,
        "primary_threshold": primary,
        "subgroups": subgroups,
        "subgroup_flags": flag_keys(subgroups),
        "decision_curve": decision_curve(y, risk, *policy.decision_curve_thresholds),
    }
    if slices:
        result["slices"] = {
            name: {
                "rows": len(part),
                "events": int(part[LABEL].sum()),
                "auroc": float(
                    weighted.auroc(
                        weighted.Scored.of(part[LABEL].to_numpy(), part[SCORE].to_numpy()),
                        np.ones((1, len(part))),
                    )[0]
                )
                if part[LABEL].nunique() == 2
                else None,
                "observed_to_expected": round(float(part[LABEL].sum() / part[SCORE].sum()), 6),
            }
            for name, part in slices.items()
        }
    return result


def headline(evaluation: dict[str, Any]) -> dict[str, Any]:
    """The run summary's ``evaluation`` object (the contract checks rely on)."""
    primary = evaluation["thresholds"][evaluation["primary_threshold"]]
    return {
        "auroc": evaluation["discrimination"]["auroc"]["value"],
        "auroc_ci": evaluation["discrimination"]["auroc"]["ci"],
        "auprc": evaluation["discrimination"]["auprc"]["value"],
        "ece": evaluation["calibration"]["ece"]["value"],
        "calibration_slope": evaluation["calibration"]["slope"]["value"],
        "calibration_intercept": evaluation["calibration"]["intercept"]["value"],
        "brier": evaluation["calibration"]["brier"]["value"],
        "threshold": primary["threshold"],
        "alerts_per_100": primary["alerts_per_100"]["value"],
        "comparator_auroc": evaluation["comparator"]["auroc"]["value"],
    }
