"""The window AUROC's grouped Poisson bootstrap against the row-weight bootstrap it replaced,
and its Poisson draws against the Poisson distribution."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.monitoring.auroc_bootstrap import RankGroups, auroc_with_ci
from hospital_mlops.monitoring.poisson_draws import PoissonDraws


def _sample(n: int, seed: int, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = np.clip(rng.beta(1.6, 11.0, n), 0.005, 0.95)
    if decimals is not None:  # risks as a model reports them rounded: many ties
        risk = np.round(risk, decimals)
    return (rng.random(n) < risk).astype("float64"), risk


def _row_weight_ci(
    y: np.ndarray, risk: np.ndarray, replicates: int, seed: int
) -> tuple[np.ndarray, list[float]]:
    """The implementation before: a Poisson(1) weight per row and replicate, every metric over
    the replicates × rows matrix (hospital_mlops.model.evaluate.weighted)."""
    scored = weighted.Scored.of(y, risk)
    weights = np.random.default_rng(seed).poisson(1.0, size=(replicates, len(y)))
    values = weighted.auroc(scored, weights.astype("float64"))
    values = values[np.isfinite(values)]
    return values, [float(v) for v in np.quantile(values, [0.025, 0.975])]


def _groups_of_rows(y: np.ndarray, risk: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Row weights summed into RankGroups' groups, derived here independently: cases by
    distinct risk, highest first; non-cases by (case risks strictly above, ties one)."""
    case = y == 1
    values, group = np.unique(-risk[case], return_inverse=True)
    cases = np.stack([np.bincount(group, weights=row[case], minlength=len(values)) for row in w])
    case_risks = -values  # descending
    other = risk[~case]
    above = (case_risks[None, :] > other[:, None]).sum(axis=1)
    tied = (case_risks[None, :] == other[:, None]).any(axis=1)
    classes, cls = np.unique(2 * above + tied, return_inverse=True)
    non_cases = np.stack(
        [np.bincount(cls, weights=row[~case], minlength=len(classes)) for row in w]
    )
    return cases, non_cases


@pytest.mark.parametrize("decimals", [None, 2, 1])
def test_any_row_weights_give_the_row_weight_auroc_exactly(decimals: int | None) -> None:
    """The grouping loses nothing: for the same row weights, the grouped AUROC is the
    row-weighted one, ties included. So drawing a group's summed weight directly (Poisson of
    its size) is the row bootstrap's distribution."""
    y, risk = _sample(1500, seed=3, decimals=decimals)
    w = np.random.default_rng(4).poisson(1.0, size=(20, len(y))).astype("float64")
    expected = weighted.auroc(weighted.Scored.of(y, risk), np.vstack([np.ones(len(y)), w]))
    cases, non_cases = _groups_of_rows(y, risk, np.vstack([np.ones(len(y)), w]))
    groups = RankGroups.of(y, risk)
    assert np.allclose(groups.auroc(cases, non_cases), expected, rtol=0, atol=1e-12)
    assert groups.point() == pytest.approx(expected[0], abs=1e-12)
    assert np.array_equal(groups.case_counts, cases[0]) and np.array_equal(
        groups.class_counts, non_cases[0]
    )


def test_the_ci_agrees_with_the_row_weight_bootstrap() -> None:
    y, risk = _sample(3000, seed=0)
    before, (low_before, high_before) = _row_weight_ci(y, risk, replicates=4000, seed=0)
    groups = RankGroups.of(y, risk)
    after = groups.replicates(4000, seed=0)
    low, high = np.quantile(after, [0.025, 0.975])
    # same distribution: centre, spread and both ends within Monte Carlo error
    assert after.mean() == pytest.approx(before.mean(), abs=0.002)
    assert after.std() == pytest.approx(before.std(), rel=0.06)
    assert low == pytest.approx(low_before, abs=0.006)
    assert high == pytest.approx(high_before, abs=0.006)
    # the policy's 200 replicates: the interval as wide as before, within Monte Carlo error
    point, ci = auroc_with_ci(y, risk, replicates=200, seed=0, ci_level=0.95)
    _, ci_before = _row_weight_ci(y, risk, replicates=200, seed=0)
    assert ci[0] < point < ci[1]
    assert ci[1] - ci[0] == pytest.approx(ci_before[1] - ci_before[0], rel=0.2)
    assert ci == pytest.approx(ci_before, abs=0.01)


def test_the_ci_covers_the_true_auroc_as_often_as_it_says() -> None:
    # the population's AUROC, from a sample large enough that its error is negligible
    y_all, risk_all = _sample(2_000_000, seed=10)
    truth = RankGroups.of(y_all, risk_all).point()
    covered = 0
    trials = 200
    for trial in range(trials):
        y, risk = _sample(600, seed=100 + trial, decimals=3)
        _, (low, high) = auroc_with_ci(y, risk, replicates=200, seed=trial, ci_level=0.95)
        covered += low <= truth <= high
    # 95% nominal; 200 trials: a binomial 95% range of about 0.92–0.98, a little wider for a
    # percentile interval on 600 rows
    assert 0.89 <= covered / trials <= 0.99


def test_the_same_seed_gives_the_same_interval_and_a_sure_model_a_point_one() -> None:
    y, risk = _sample(2000, seed=1)
    assert auroc_with_ci(y, risk, 200, 7, 0.95) == auroc_with_ci(y, risk, 200, 7, 0.95)
    assert auroc_with_ci(y, risk, 200, 7, 0.95) != auroc_with_ci(y, risk, 200, 8, 0.95)
    perfect = np.r_[np.full(50, 0.9), np.full(150, 0.1)]
    point, ci = auroc_with_ci(np.r_[np.ones(50), np.zeros(150)], perfect, 200, 0, 0.95)
    assert point == 1.0 and ci == [1.0, 1.0]
    tied = np.full(200, 0.3)  # no discrimination at all: every pair a tie
    point, ci = auroc_with_ci(np.r_[np.ones(50), np.zeros(150)], tied, 200, 0, 0.95)
    assert point == 0.5 and ci == [0.5, 0.5]


@pytest.mark.parametrize("mean", [1.0, 2.0, 7.0, 19.0, 60.0, 300.0])
def test_the_group_draws_are_poisson_of_the_group_size(mean: float) -> None:
    """Inverse-CDF draws through the guide tables (300: beyond the tables, numpy's own), each
    column its own mean, against the Poisson distribution."""
    means = np.array([1.0, mean, 5.0])
    draws = PoissonDraws(means).draw(np.random.default_rng(11), 200_000)
    assert draws.shape == (200_000, 3) and (draws == np.round(draws)).all() and draws.min() >= 0
    x = draws[:, 1].astype(np.int64)
    # expected counts of at least 20 per bin, the tails pooled
    low, high = (int(k) for k in stats.poisson.ppf([1e-4, 1 - 1e-4], mean))
    observed = np.bincount(np.clip(x, low, high) - low, minlength=high - low + 1)
    expected = np.diff(np.r_[0.0, stats.poisson.cdf(np.arange(low, high), mean), 1.0])
    assert stats.chisquare(observed, expected * len(x)).pvalue > 0.001
    assert x.mean() == pytest.approx(mean, rel=0.01) and x.var() == pytest.approx(mean, rel=0.03)
    assert abs(np.corrcoef(draws[:, 0], draws[:, 1])[0, 1]) < 0.01  # columns independent
