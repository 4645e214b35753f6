"""Reason codes: why this patient's risk is what it is, in the clinician's words.

Exact TreeSHAP contributions from XGBoost (``pred_contribs``; permissively licensed, and exact for
tree ensembles) are moved onto the calibrated log-odds scale, so a patient's contributions plus
the baseline add up to the logit of the risk the clinician sees. The largest ones, by size,
become the reasons, each with its feature's clinical wording, the patient's value and the
direction it pushes the risk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.features import FeatureDef, FeatureSet
from hospital_mlops.model.train import Calibration, RiskModel

TOP_REASONS = 3


@dataclass(frozen=True)
class Reason:
    feature: str
    text: str
    contribution: float  # calibrated log-odds; positive raises the risk

    def as_dict(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy is ~20x slower, for every reason served.
        return {"feature": self.feature, "text": self.text, "contribution": self.contribution}


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
    return calibrated(model.contributions(frame, fs), model.calibration)


def calibrated(raw: np.ndarray, calibration: Calibration) -> Attribution:
    """Booster contributions (last column: the bias) on the calibrated log-odds scale."""
    a, b = calibration.intercept, calibration.slope
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
    values = frame.reset_index(drop=True)
    return [
        row_reasons(contributions, _cell_reader(values, row), fs, top)
        for row, contributions in enumerate(attribution.contributions)
    ]


def _cell_reader(values: pd.DataFrame, row: int) -> Callable[[str], object]:
    def value_of(name: str) -> object:
        return values.at[row, name]

    return value_of


def reason_codes_of_rows(
    attribution: Attribution,
    rows: Sequence[Mapping[str, Any]],
    fs: FeatureSet,
    top: int = TOP_REASONS,
) -> list[list[Reason]]:
    """``reason_codes`` for feature rows (the serving path) instead of a frame."""
    return [
        row_reasons(contributions, row.__getitem__, fs, top)
        for row, contributions in zip(rows, attribution.contributions, strict=True)
    ]


def row_reasons(
    contributions: np.ndarray, value_of: Callable[[str], object], fs: FeatureSet, top: int
) -> list[Reason]:
    """One row's reasons; ``value_of`` gives the row's value of a feature."""
    order = np.argsort(-np.abs(contributions), kind="stable")
    reasons = []
    for j in order[:top]:
        if contributions[j] == 0:
            break
        feature = fs.features[j]
        reasons.append(
            Reason(
                feature=feature.name,
                text=reason_text(feature, value_of(feature.name), float(contributions[j])),
                contribution=round(float(contributions[j]), 6),
            )
        )
    return reasons
