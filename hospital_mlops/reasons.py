"""Reason codes: why this patient's risk is what it is, in the clinician's words.

Exact TreeSHAP contributions from XGBoost (``pred_contribs``; permissively licensed, and exact for
tree ensembles) are moved onto the calibrated log-odds scale, so a patient's contributions plus
the baseline add up to the logit of the risk the clinician sees. The largest ones, by size,
become the reasons, each with its feature's clinical wording, the patient's value and the
direction it pushes the risk.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.features import FeatureDef, FeatureSet
from hospital_mlops.train import RiskModel

TOP_REASONS = 3


@dataclass(frozen=True)
class Reason:
    feature: str
    text: str
    contribution: float  # calibrated log-odds; positive raises the risk

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attribution:
    """Per-row contributions on the calibrated log-odds scale, and the shared baseline."""

    contributions: np.ndarray  # rows × features
    baseline: np.ndarray  # rows

    @property
    def logit(self) -> np.ndarray:
        return np.asarray(self.contributions.sum(axis=1) + self.baseline)


def attribute(model: RiskModel, frame: pd.DataFrame, fs: FeatureSet) -> Attribution:
    """TreeSHAP on the booster's log-odds, scaled by the Platt slope: calibrated logit =
    a + b·(Σ contributions + bias), so b·contribution is each feature's share of it."""
    raw = model.contributions(frame, fs)
    a, b = model.calibration.intercept, model.calibration.slope
    return Attribution(contributions=b * raw[:, :-1], baseline=a + b * raw[:, -1])


def _value_text(feature: FeatureDef, value: object) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "not recorded"
    if feature.kind == "binary":
        return "yes" if float(value) >= 0.5 else "no"  # type: ignore[arg-type]
    if feature.kind == "numeric":
        number = float(value)  # type: ignore[arg-type]
        return f"{number:g}"
    return str(value).replace("_", " ")


def reason_text(feature: FeatureDef, value: object, contribution: float) -> str:
    direction = "raises" if contribution > 0 else "lowers"
    return f"{feature.clinical_wording}: {_value_text(feature, value)} ({direction} the risk)"


def reason_codes(
    attribution: Attribution, frame: pd.DataFrame, fs: FeatureSet, top: int = TOP_REASONS
) -> list[list[Reason]]:
    """The ``top`` largest contributions per row, largest first. A feature that did not move the
    risk (contribution 0, e.g. a tree never split on it) is never a reason."""
    out: list[list[Reason]] = []
    values = frame.reset_index(drop=True)
    for row, contributions in enumerate(attribution.contributions):
        order = np.argsort(-np.abs(contributions), kind="stable")
        reasons = []
        for j in order[:top]:
            if contributions[j] == 0:
                break
            feature = fs.features[j]
            value = values.at[row, feature.name]
            reasons.append(
                Reason(
                    feature=feature.name,
                    text=reason_text(feature, value, float(contributions[j])),
                    contribution=round(float(contributions[j]), 6),
                )
            )
        out.append(reasons)
    return out
