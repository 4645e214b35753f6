"""TreeSHAP tables against XGBoost's own pred_contribs and margins, on models built to have the
awkward parts: categorical splits, missing values, a feature split twice on one path, uneven
depths, and a model trained past the iterations served."""

from __future__ import annotations

import numpy as np
import pytest
import xgboost as xgb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hospital_mlops.model.train import _logistic_base_margin, _xgboost_logistic
from hospital_mlops.model.tree_shap import AGREEMENT, PathTables

N_FEATURES = 5
TYPES = ["q", "q", "c", "q", "c"]


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(size=n),
            rng.integers(0, 40, size=n).astype(float),
            rng.integers(0, 12, size=n).astype(float),
            rng.exponential(size=n),
            rng.integers(0, 3, size=n).astype(float),
        ]
    )
    x[rng.random(x.shape) < 0.1] = np.nan
    logit = np.nan_to_num(x[:, 0]) - 0.05 * np.nan_to_num(x[:, 1]) + np.isin(x[:, 2], [2, 5, 7])
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return x, y


def _model(depth: int, rounds: int = 40) -> xgb.Booster:
    x, y = _data(4000, seed=depth)
    matrix = xgb.DMatrix(x, y, feature_types=TYPES, enable_categorical=True)
    params = {
        "objective": "binary:logistic",
        "max_depth": depth,
        "eta": 0.3,
        "max_cat_to_onehot": 1,
        "nthread": 1,
        "seed": 3,
    }
    return xgb.train(params, matrix, num_boost_round=rounds)


def _xgboost(booster: xgb.Booster, x: np.ndarray, iterations: tuple[int, int], **kind: bool):
    matrix = xgb.DMatrix(x, feature_types=TYPES, enable_categorical=True, nthread=1)
    return booster.predict(matrix, iteration_range=iterations, **kind)


@pytest.fixture(scope="module", params=[2, 4, 6])
def model(request) -> tuple[xgb.Booster, PathTables, tuple[int, int]]:
    booster = _model(request.param)
    iterations = (0, 30)  # trained 40 rounds; served 30, as early stopping does
    bias = float(
        _xgboost(booster, np.zeros((1, N_FEATURES)), iterations, pred_contribs=True)[0, -1]
    )
    tables = PathTables.of_booster(booster, iterations, N_FEATURES, bias)
    assert tables is not None
    return booster, tables, iterations


def _awkward_rows(tables: PathTables, seed: int) -> np.ndarray:
    rows = tables.probe_rows(400, seed=seed)
    rng = np.random.default_rng(seed)
    odd = rng.choice([1e30, -1e30, -1.0, 99.0, 2.5, np.nan], size=(40, N_FEATURES))
    return np.vstack([rows, odd, _data(200, seed=seed + 100)[0]])


def test_contributions_agree_with_pred_contribs(model) -> None:
    booster, tables, iterations = model
    rows = _awkward_rows(tables, seed=1)
    expected = _xgboost(booster, rows, iterations, pred_contribs=True)
    got = tables.contributions(rows)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= AGREEMENT  # float32 noise: ~1e-6 here
    # and they add up to the margin, as SHAP values must
    margins = _xgboost(booster, rows, iterations, output_margin=True)
    np.testing.assert_allclose(got.sum(axis=1), margins, atol=1e-5)


def test_margins_and_risk_are_xgboosts_bit_for_bit(model) -> None:
    booster, tables, iterations = model
    rows = _awkward_rows(tables, seed=2)
    base = _logistic_base_margin(booster)
    assert base is not None
    margins, contributions = tables.margins_and_contributions(rows, base)
    np.testing.assert_array_equal(margins, _xgboost(booster, rows, iterations, output_margin=True))
    np.testing.assert_array_equal(_xgboost_logistic(margins), _xgboost(booster, rows, iterations))
    np.testing.assert_array_equal(contributions, tables.contributions(rows))


def test_one_row_answers_as_in_a_batch(model) -> None:
    booster, tables, iterations = model
    rows = _awkward_rows(tables, seed=3)[:50]
    base = _logistic_base_margin(booster)
    assert base is not None
    batch = tables.contributions(rows)
    margins, _ = tables.margins_and_contributions(rows, base)
    expected = _xgboost(booster, rows, iterations, output_margin=True)
    for i in range(len(rows)):
        np.testing.assert_array_equal(tables.contributions(rows[i : i + 1])[0], batch[i])
        one, _ = tables.margins_and_contributions(rows[i : i + 1], base)  # its own code path
        assert one.shape == (1,) and one[0] == margins[i] == expected[i]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=arrays(
        np.float64,
        (3, N_FEATURES),
        elements=st.one_of(
            st.floats(allow_nan=True, allow_infinity=False, width=32),
            st.integers(-2, 50).map(float),
        ),
    )
)
def test_any_rows_agree(model, rows: np.ndarray) -> None:
    booster, tables, iterations = model
    expected = _xgboost(booster, rows, iterations, pred_contribs=True)
    assert np.max(np.abs(tables.contributions(rows) - expected)) <= AGREEMENT


def test_tables_that_disagree_are_refused(model) -> None:
    booster, tables, iterations = model
    probe = tables.probe_rows(64)
    expected = _xgboost(booster, probe, iterations, pred_contribs=True)
    assert tables.agrees_with(probe, expected)
    off = expected.copy()
    off[:, 0] += 10 * AGREEMENT
    assert not tables.agrees_with(probe, off)
    uneven_bias = expected.copy()
    uneven_bias[1, -1] += 1e-3  # a bias column that varies by row is not XGBoost's
    assert not tables.agrees_with(probe, uneven_bias)


def _fresh(booster: xgb.Booster, tables: PathTables, iterations: tuple[int, int]) -> PathTables:
    fresh = PathTables.of_booster(booster, iterations, N_FEATURES, tables.bias)
    assert fresh is not None
    return fresh


def test_the_compiled_pass_answers_as_the_numpy_pass_bit_for_bit(model) -> None:
    booster, tables, iterations = model
    base = _logistic_base_margin(booster)
    assert base is not None
    compiled = _fresh(booster, tables, iterations)
    assert not compiled.compiled
    assert compiled.use_compiled(compiled.probe_rows(64, seed=11), base) and compiled.compiled
    infinite = [[np.inf, -np.inf, np.inf, np.nan, -np.inf], [-np.inf, np.inf, -np.inf, 0, np.inf]]
    rows = np.vstack([_awkward_rows(tables, seed=5), infinite])
    for got, want in zip(
        compiled.margins_and_contributions(rows, base),
        tables.margins_and_contributions(rows, base),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(compiled.contributions(rows[:1]), tables.contributions(rows[:1]))
    finite = rows[:-2]
    margins, _ = compiled.margins_and_contributions(finite, base)
    np.testing.assert_array_equal(
        margins, _xgboost(booster, finite, iterations, output_margin=True)
    )


def test_the_compiled_pass_on_a_model_without_categorical_splits() -> None:
    x, y = _data(1500, seed=21)
    numeric = ["q"] * N_FEATURES
    matrix = xgb.DMatrix(x, y, feature_types=numeric)
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, matrix, 8)
    base = _logistic_base_margin(booster)
    assert base is not None
    rows = np.vstack([x[:200], [[np.inf, -np.inf, np.nan, 0.0, 1e30]]])
    reference = PathTables.of_booster(booster, (0, 8), N_FEATURES, 0.0)
    compiled = PathTables.of_booster(booster, (0, 8), N_FEATURES, 0.0)
    assert reference is not None and compiled is not None
    assert compiled.use_compiled(x[:64], base)
    for got, want in zip(
        compiled.margins_and_contributions(rows, base),
        reference.margins_and_contributions(rows, base),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    expected = booster.predict(xgb.DMatrix(x[:200], feature_types=numeric), output_margin=True)
    np.testing.assert_array_equal(compiled.margins_and_contributions(x[:200], base)[0], expected)


def test_a_compiled_pass_that_disagrees_is_not_used(model, monkeypatch) -> None:
    from hospital_mlops.model import tree_shap_kernel

    booster, tables, iterations = model
    base = _logistic_base_margin(booster)
    assert base is not None
    real = tree_shap_kernel.compiled_pass()
    assert real is not None

    def off_by_a_little(*args) -> None:
        real(*args)
        args[-1][:, 0] += 1e-12  # contributions: far below AGREEMENT, still not the same

    monkeypatch.setattr(tree_shap_kernel, "compiled_pass", lambda: off_by_a_little)
    fresh = _fresh(booster, tables, iterations)
    assert not fresh.use_compiled(fresh.probe_rows(64), base) and not fresh.compiled
    monkeypatch.setattr(tree_shap_kernel, "compiled_pass", lambda: None)  # no numba
    assert not fresh.use_compiled(fresh.probe_rows(64), base) and not fresh.compiled


def test_the_compiled_pass_can_be_switched_off(model, monkeypatch) -> None:
    booster, tables, iterations = model
    base = _logistic_base_margin(booster)
    assert base is not None
    monkeypatch.setenv("HMLOPS_COMPILED_TREESHAP", "0")
    fresh = _fresh(booster, tables, iterations)
    assert not fresh.use_compiled(fresh.probe_rows(64), base) and not fresh.compiled


def test_paths_deeper_than_the_tables_hold_keep_pred_contribs() -> None:
    deep = _model(depth=10, rounds=3)
    assert PathTables.of_booster(deep, (0, 3), N_FEATURES, 0.0) is None


def test_base_margin_only_for_binary_logistic() -> None:
    x, y = _data(500, seed=9)
    matrix = xgb.DMatrix(x, y, feature_types=TYPES, enable_categorical=True)
    regression = xgb.train({"objective": "reg:squarederror", "max_depth": 2}, matrix, 2)
    assert _logistic_base_margin(regression) is None
