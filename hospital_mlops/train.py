"""Training: gradient-boosted trees with early stopping, calibrated on the validation slice.

``RiskModel`` is the whole scoring function: the feature set's encoding, the XGBoost booster and
the calibration map. It is saved as plain files (booster JSON, calibration JSON, manifest) whose
sha256 is the model hash: the same snapshot and seed give the same hash. Serving loads exactly
this object, so a risk in production is computed the way it was validated.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from hospital_mlops.features import FeatureSet
from hospital_mlops.use_case import TrainingConfig

MODEL_FILES = ("booster.json", "calibration.json", "model.json")
_EPS = 1e-6


def design_matrix(frame: pd.DataFrame, fs: FeatureSet) -> pd.DataFrame:
    """Model inputs in the feature set's order; categoricals with their declared categories so
    training and serving encode a value identically (an unseen value becomes missing)."""
    missing = [f.name for f in fs.features if f.name not in frame.columns]
    if missing:
        raise KeyError(f"feature columns missing: {missing}")
    columns: dict[str, Any] = {}
    for f in fs.features:
        if f.kind == "categorical":
            columns[f.name] = pd.Categorical(frame[f.name], categories=list(f.allowed or ()))
        else:
            columns[f.name] = pd.to_numeric(frame[f.name], errors="coerce").astype("float64")
    return pd.DataFrame(columns, index=frame.index)


def logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.asarray(np.log(p / (1 - p)))


def expit(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None = None,
    offset: np.ndarray | None = None,
    iterations: int = 50,
) -> np.ndarray:
    """Unpenalized logistic regression by Newton-Raphson (intercept first). Used for Platt
    calibration and for calibration intercept/slope: an exact fit, not a regularized one."""
    design = np.column_stack([np.ones(len(y)), x]) if x.size else np.ones((len(y), 1))
    w = np.ones(len(y)) if weights is None else weights
    off = np.zeros(len(y)) if offset is None else offset
    beta = np.zeros(design.shape[1])
    for _ in range(iterations):
        p = expit(design @ beta + off)
        gradient = design.T @ (w * (y - p))
        hessian = (design * (w * p * (1 - p))[:, None]).T @ design
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(beta)), gradient)
        beta = beta + step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


@dataclass(frozen=True)
class Calibration:
    """Platt scaling on the booster's log-odds: risk = expit(a + b * logit(raw))."""

    intercept: float
    slope: float

    def apply(self, raw: np.ndarray) -> np.ndarray:
        return expit(self.intercept + self.slope * logit(raw))


@dataclass
class RiskModel:
    booster: xgb.Booster
    calibration: Calibration
    feature_set_name: str
    feature_set_version: str
    feature_names: list[str]
    best_iteration: int
    params: dict[str, Any]

    def raw_scores(self, x: pd.DataFrame) -> np.ndarray:
        dm = xgb.DMatrix(x, enable_categorical=True)
        return np.asarray(self.booster.predict(dm, iteration_range=(0, self.best_iteration + 1)))

    def predict_risk(self, frame: pd.DataFrame, fs: FeatureSet) -> np.ndarray:
        """Calibrated probability of the label for each row of a feature frame."""
        return self.calibration.apply(self.raw_scores(design_matrix(frame, fs)))

    def contributions(self, frame: pd.DataFrame, fs: FeatureSet) -> np.ndarray:
        """Exact TreeSHAP log-odds contributions per feature (last column: the bias)."""
        dm = xgb.DMatrix(design_matrix(frame, fs), enable_categorical=True)
        return np.asarray(
            self.booster.predict(
                dm, pred_contribs=True, iteration_range=(0, self.best_iteration + 1)
            )
        )

    def save(self, directory: Path) -> str:
        directory.mkdir(parents=True, exist_ok=True)
        self.booster.save_model(directory / "booster.json")
        (directory / "calibration.json").write_text(
            json.dumps({"method": "platt", **self.calibration.__dict__}, indent=2, sort_keys=True)
        )
        manifest = {
            "feature_set": self.feature_set_name,
            "feature_set_version": self.feature_set_version,
            "feature_names": self.feature_names,
            "best_iteration": self.best_iteration,
            "params": self.params,
            "xgboost_version": xgb.__version__,
        }
        (directory / "model.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        return model_hash(directory)

    @classmethod
    def load(cls, directory: Path) -> RiskModel:
        manifest = json.loads((directory / "model.json").read_text())
        booster = xgb.Booster()
        booster.load_model(directory / "booster.json")
        cal = json.loads((directory / "calibration.json").read_text())
        return cls(
            booster=booster,
            calibration=Calibration(intercept=cal["intercept"], slope=cal["slope"]),
            feature_set_name=manifest["feature_set"],
            feature_set_version=manifest["feature_set_version"],
            feature_names=manifest["feature_names"],
            best_iteration=int(manifest["best_iteration"]),
            params=manifest["params"],
        )


def model_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in MODEL_FILES:
        digest.update(name.encode() + b"\0" + (directory / name).read_bytes() + b"\0")
    return digest.hexdigest()


def booster_params(cfg: TrainingConfig, n_jobs: int) -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "eta": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "min_child_weight": cfg.min_child_weight,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "max_cat_to_onehot": 1,
        "seed": cfg.seed,
        # Fixed, not "all cores": histogram sums depend on the thread split, and the model hash
        # must not depend on the machine.
        "nthread": n_jobs,
    }


def train_risk_model(
    train: pd.DataFrame,
    validation: pd.DataFrame,
    fs: FeatureSet,
    cfg: TrainingConfig,
    n_jobs: int = 2,
) -> RiskModel:
    """Boost on train, stop early on validation log-loss, then Platt-calibrate on validation."""
    params = booster_params(cfg, n_jobs)
    dtrain = xgb.DMatrix(design_matrix(train, fs), label=train[fs.label], enable_categorical=True)
    dvalid = xgb.DMatrix(
        design_matrix(validation, fs), label=validation[fs.label], enable_categorical=True
    )
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=cfg.max_rounds,
        evals=[(dvalid, "validation")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )
    best = int(booster.best_iteration)
    raw_valid = np.asarray(booster.predict(dvalid, iteration_range=(0, best + 1)))
    a, b = fit_logistic(logit(raw_valid), validation[fs.label].to_numpy(dtype="float64"))
    return RiskModel(
        booster=booster,
        calibration=Calibration(intercept=float(a), slope=float(b)),
        feature_set_name=fs.name,
        feature_set_version=fs.version,
        feature_names=[f.name for f in fs.features],
        best_iteration=best,
        params=params,
    )


@dataclass(frozen=True)
class Comparator:
    """The simple baseline a model must beat: logistic regression on log(1 + prior use)."""

    columns: list[str]
    coefficients: list[float]  # intercept first

    def predict_risk(self, frame: pd.DataFrame) -> np.ndarray:
        x = np.log1p(frame[self.columns].to_numpy(dtype="float64").clip(min=0))
        x = np.nan_to_num(x, nan=0.0)
        beta = np.asarray(self.coefficients)
        return expit(beta[0] + x @ beta[1:])

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "coefficients": self.coefficients}


def train_comparator(train: pd.DataFrame, columns: list[str], label: str) -> Comparator:
    missing = [c for c in columns if c not in train.columns]
    if missing:
        raise KeyError(f"comparator columns missing from the feature snapshot: {missing}")
    x = np.nan_to_num(np.log1p(train[columns].to_numpy(dtype="float64").clip(min=0)), nan=0.0)
    beta = fit_logistic(x, train[label].to_numpy(dtype="float64"))
    return Comparator(columns=list(columns), coefficients=[float(v) for v in beta])
