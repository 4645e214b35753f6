"""Training: gradient-boosted trees with early stopping, calibrated on the validation slice.

``RiskModel`` is the whole scoring function: the feature set's encoding, the XGBoost booster and
the calibration map. It is saved as plain files (booster JSON, calibration JSON, manifest) whose
sha256 is the model hash: the same snapshot and seed give the same hash. Serving loads exactly
this object, so a risk in production is computed the way it was validated.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from hospital_mlops.features import FeatureSet
from hospital_mlops.model.tree_shap import PathTables
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


def feature_types(fs: FeatureSet) -> list[str]:
    """XGBoost's feature types for ``design_array``: "c" marks a categorical code column."""
    return ["c" if f.kind == "categorical" else "q" for f in fs.features]


def design_array(rows: Sequence[Mapping[str, Any]], fs: FeatureSet) -> np.ndarray:
    """``design_matrix`` of feature rows as a float array, without pandas: a categorical is its
    code in the declared categories (what ``pd.Categorical`` gives XGBoost), and a value outside
    them, or missing, is NaN (code -1)."""
    codes = _category_codes(fs)
    out = np.empty((len(rows), len(fs.features)), dtype="float64")
    for i, row in enumerate(rows):
        for j, f in enumerate(fs.features):
            value = row[f.name]
            if f.kind == "categorical":
                out[i, j] = (
                    codes[f.name].get(value, math.nan) if isinstance(value, str) else math.nan
                )
            else:
                out[i, j] = math.nan if value is None else float(value)
    return out


_CATEGORY_CODES: dict[str, tuple[FeatureSet, dict[str, dict[str, float]]]] = {}


def _category_codes(fs: FeatureSet) -> dict[str, dict[str, float]]:
    """Per categorical feature: category → code, built once per feature set."""
    cached = _CATEGORY_CODES.get(fs.name)
    if cached is None or cached[0] is not fs:
        codes = {
            f.name: {c: float(k) for k, c in enumerate(f.allowed or ())}
            for f in fs.features
            if f.kind == "categorical"
        }
        cached = _CATEGORY_CODES[fs.name] = (fs, codes)
    return cached[1]


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
    _row_scorers: dict[str, RowScorer] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

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

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_row_scorers": {}}  # serving caches are rebuilt, not copied

    def row_scorer(self, fs: FeatureSet) -> RowScorer:
        """The serving form of this model for ``fs`` (built once, then reused)."""
        scorer = self._row_scorers.get(fs.name)
        if scorer is None:
            scorer = self._row_scorers[fs.name] = RowScorer(self, fs)
        return scorer

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


class RowScorer:
    """A request's risks and TreeSHAP contributions from feature rows, for serving.

    The same booster, iterations and calibration as ``RiskModel.predict_risk`` and
    ``RiskModel.contributions`` (a test holds them equal on real rows), without pandas and on
    one thread: a request has a handful of rows, and spreading them over cores costs more than
    it saves. Both answers come from one DMatrix, made and predicted on through XGBoost's C API
    directly when that gives the wrapper's answers (see ``_DirectPrediction``)."""

    def __init__(self, model: RiskModel, fs: FeatureSet) -> None:
        categorical = [t == "c" for t in model.booster.feature_types or feature_types(fs)]
        if [f.name for f in fs.features] != model.feature_names or categorical != [
            f.kind == "categorical" for f in fs.features
        ]:
            raise ValueError(f"the model's features are not those of {fs.name}")
        self.fs = fs
        self.calibration = model.calibration
        self.iterations = (0, model.best_iteration + 1)
        self.booster = model.booster.copy()  # the caller's booster keeps its thread setting
        self.booster.set_param({"nthread": 1})
        self.types = feature_types(fs)
        self._direct = _DirectPrediction.if_identical(
            self.booster, self.types, self.iterations, self._through_wrapper
        )
        self._tables: PathTables | None = None
        self._base_margin: np.float32 | None = None
        self._use_tables(len(fs.features))

    def _use_tables(self, n_features: int) -> None:
        """TreeSHAP from tables (a fifth of ``pred_contribs``' time per row), if they agree
        with ``pred_contribs`` on probe rows that take every branch; and the risk from the
        same pass, if the margins and XGBoost's logistic transform redone here give XGBoost's
        predictions bit for bit on those rows. The tables are built once and XGBoost is asked
        once, for both answers."""
        try:
            candidate = PathTables.of_booster(self.booster, self.iterations, n_features, 0.0)
        except (KeyError, ValueError, IndexError, TypeError):
            return
        if candidate is None:
            return
        n = n_features
        edges = np.vstack([np.zeros(n), np.full(n, np.nan), np.arange(float(n)), np.ones(n)])
        probe = np.vstack([edges, candidate.probe_rows(512)])
        expected_risk, expected_contributions = self._through_wrapper(probe)
        if not candidate.agrees_with(probe, expected_contributions):
            return
        self._tables = candidate
        base_margin = _logistic_base_margin(self.booster)
        if base_margin is not None:
            margins, _ = candidate.margins_and_contributions(probe, base_margin)
            if np.array_equal(_xgboost_logistic(margins), expected_risk):
                self._base_margin = base_margin
        candidate.use_compiled(probe, base_margin if base_margin is not None else np.float32(0))

    @property
    def tables(self) -> bool:
        """Whether contributions come from TreeSHAP tables (else XGBoost ``pred_contribs``)."""
        return self._tables is not None

    @property
    def compiled_tables(self) -> bool:
        """Whether the tables' pass is the compiled one (``tree_shap_kernel``)."""
        return self._tables is not None and self._tables.compiled

    @property
    def risk_from_tables(self) -> bool:
        """Whether the risk comes from the tables' pass (else a separate XGBoost prediction)."""
        return self._base_margin is not None

    @property
    def direct(self) -> bool:
        """Whether predictions take the direct C API path (else XGBoost's Python wrapper)."""
        return self._direct is not None

    def risk_and_contributions(
        self, rows: Sequence[Mapping[str, Any]]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated risks, and booster log-odds contributions (last column: the bias)."""
        x = design_array(rows, self.fs)
        if self._tables is not None and self._base_margin is not None:
            margins, contributions = self._tables.margins_and_contributions(x, self._base_margin)
            raw = _xgboost_logistic(margins)
        elif self._tables is not None:
            contributions = self._tables.contributions(x)
            raw = self._direct.values(x) if self._direct is not None else self._values(x)
        elif self._direct is not None:
            raw, contributions = self._direct.predict(x)
        else:
            raw, contributions = self._through_wrapper(x)
        return self.calibration.apply(raw), contributions

    def _values(self, x: np.ndarray) -> np.ndarray:
        dm = xgb.DMatrix(x, feature_types=self.types, enable_categorical=True, nthread=1)
        raw = self.booster.predict(dm, iteration_range=self.iterations, validate_features=False)
        return np.asarray(raw)

    def _through_wrapper(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # Columns are in the booster's order by construction (checked in __init__), so XGBoost's
        # per-call name checks are skipped.
        dm = xgb.DMatrix(x, feature_types=self.types, enable_categorical=True, nthread=1)
        raw = self.booster.predict(dm, iteration_range=self.iterations, validate_features=False)
        contributions = self.booster.predict(
            dm, pred_contribs=True, iteration_range=self.iterations, validate_features=False
        )
        return np.asarray(raw), np.asarray(contributions)


def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m")
    if name is None:
        return None
    try:
        libm = ctypes.CDLL(name)
    except OSError:
        return None
    for function in (libm.expf, libm.logf):
        function.restype = ctypes.c_float
        function.argtypes = [ctypes.c_float]
    return libm


_LIBM = _libm()


def _logistic_base_margin(booster: xgb.Booster) -> np.float32 | None:
    """XGBoost's starting margin for ``binary:logistic`` (ProbToMargin of its base_score, in
    float32 with the C library's logf); None for other objectives or without libm."""
    learner = json.loads(booster.save_config())["learner"]
    if _LIBM is None or learner["objective"]["name"] != "binary:logistic":
        return None
    base_score = np.float32(float(learner["learner_model_param"]["base_score"].strip("[]")))
    return np.float32(-_LIBM.logf(float(np.float32(1.0) / base_score - np.float32(1.0))))


def _xgboost_logistic(margins: np.ndarray) -> np.ndarray:
    """XGBoost's sigmoid as its CPU predictor computes it: 1 / (expf(min(-x, 88.7)) + 1 + 1e-16)
    in float32, with the C library's expf (numpy's own float32 exp differs in the last bit)."""
    assert _LIBM is not None
    expf = _LIBM.expf
    limit = np.float32(88.7)
    exps = np.array([expf(float(min(-m, limit))) for m in margins], dtype=np.float32)
    return np.float32(1.0) / (exps + np.float32(1.0) + np.float32(1e-16))


_VALUE, _CONTRIBUTIONS = 0, 2  # prediction types of XGBoosterPredictFromDMatrix


class _DirectPrediction:
    """The C API calls (xgboost/c_api.h) that ``DMatrix(array)`` and ``Booster.predict`` make,
    with the same arguments, minus the wrapper's per-call Python work: about a third of the
    prediction time of a one-row request. ``RowScorer`` uses it only after it gave the wrapper's
    answers, bit for bit, on probe rows."""

    def __init__(self, booster: xgb.Booster, types: list[str], iterations: tuple[int, int]):
        from xgboost.core import _LIB  # the library the xgboost package loaded

        self._lib = _LIB
        self._booster = booster
        self._types = (ctypes.c_char_p * len(types))(*(t.encode() for t in types))
        self._n_types = ctypes.c_uint64(len(types))
        self._matrix_config = json.dumps(
            {"missing": math.nan, "nthread": 1, "data_split_mode": 0}
        ).encode()
        self._predict_config = {
            kind: json.dumps(
                {
                    "type": kind,
                    "training": False,
                    "iteration_begin": iterations[0],
                    "iteration_end": iterations[1],
                    "strict_shape": False,
                }
            ).encode()
            for kind in (_VALUE, _CONTRIBUTIONS)
        }

    @classmethod
    def if_identical(
        cls,
        booster: xgb.Booster,
        types: list[str],
        iterations: tuple[int, int],
        reference: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    ) -> _DirectPrediction | None:
        """The direct path, if it gives ``reference``'s answers bit for bit on probe rows (zeros,
        missing values, every code); None if not, or if this XGBoost lacks the calls."""
        n = len(types)
        probe = np.vstack([np.zeros(n), np.full(n, np.nan), np.arange(float(n)), np.ones(n)])
        try:
            direct = cls(booster, types, iterations)
            pairs = zip(direct.predict(probe), reference(probe), strict=True)
            return direct if all(np.array_equal(a, b) for a, b in pairs) else None
        except (ImportError, AttributeError, OSError, ValueError, xgb.core.XGBoostError):
            return None

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._on_matrix(x, (_VALUE, _CONTRIBUTIONS))  # type: ignore[return-value]

    def values(self, x: np.ndarray) -> np.ndarray:
        return self._on_matrix(x, (_VALUE,))[0]

    def _on_matrix(self, x: np.ndarray, kinds: tuple[int, ...]) -> tuple[np.ndarray, ...]:
        x = np.ascontiguousarray(x, dtype="float64")
        interface = {
            "data": [x.ctypes.data, True],
            "shape": list(x.shape),
            "strides": None,
            "typestr": "<f8",
            "version": 3,
        }
        matrix = ctypes.c_void_p()
        self._check(
            self._lib.XGDMatrixCreateFromDense(
                json.dumps(interface).encode(), self._matrix_config, ctypes.byref(matrix)
            )
        )
        try:
            self._check(
                self._lib.XGDMatrixSetStrFeatureInfo(
                    matrix, b"feature_type", self._types, self._n_types
                )
            )
            return tuple(self._predict(matrix, kind) for kind in kinds)
        finally:
            self._lib.XGDMatrixFree(matrix)

    def _predict(self, matrix: ctypes.c_void_p, kind: int) -> np.ndarray:
        shape = ctypes.POINTER(ctypes.c_uint64)()
        dims = ctypes.c_uint64()
        values = ctypes.POINTER(ctypes.c_float)()
        self._check(
            self._lib.XGBoosterPredictFromDMatrix(
                self._booster.handle,
                matrix,
                self._predict_config[kind],
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(values),
            )
        )
        dimensions = [int(shape[i]) for i in range(dims.value)]
        size = math.prod(dimensions)
        # XGBoost owns the buffer until its next prediction on this thread: copy it out.
        return np.ctypeslib.as_array(values, (size,)).reshape(dimensions).copy()

    def _check(self, status: int) -> None:
        if status != 0:
            raise xgb.core.XGBoostError(self._lib.XGBGetLastError().decode())


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
    """The simple baseline a model must beat: logistic regression on log(1 + value) of each
    numeric column (prior use, age) and an indicator per level of each categorical one
    (admission source), the most common level the reference."""

    columns: list[str]
    coefficients: list[float]  # intercept first
    # categorical column → its levels after the reference, in the design's column order
    levels: dict[str, list[str]] = field(default_factory=dict)

    def design(self, frame: pd.DataFrame) -> np.ndarray:
        parts = []
        for column in self.columns:
            if column in self.levels:
                values = frame[column].astype(object).to_numpy()
                parts += [(values == level).astype("float64") for level in self.levels[column]]
            else:
                x = np.log1p(frame[column].to_numpy(dtype="float64").clip(min=0))
                parts.append(np.nan_to_num(x, nan=0.0))
        return np.column_stack(parts)

    def predict_risk(self, frame: pd.DataFrame) -> np.ndarray:
        beta = np.asarray(self.coefficients)
        return expit(beta[0] + self.design(frame) @ beta[1:])

    def as_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "coefficients": self.coefficients, "levels": self.levels}


def train_comparator(train: pd.DataFrame, columns: list[str], label: str) -> Comparator:
    missing = [c for c in columns if c not in train.columns]
    if missing:
        raise KeyError(f"comparator columns missing from the feature snapshot: {missing}")
    levels = {}
    for column in columns:
        if not pd.api.types.is_numeric_dtype(train[column]):
            counts = train[column].astype(object).value_counts()
            levels[column] = sorted(str(v) for v in counts.index[1:])
    shell = Comparator(columns=list(columns), coefficients=[], levels=levels)
    beta = fit_logistic(shell.design(train), train[label].to_numpy(dtype="float64"))
    return Comparator(list(columns), [float(v) for v in beta], levels)
