"""Our weighted metrics against scikit-learn, and the bootstrap's defining properties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.model.evaluate.bootstrap import ClusterBootstrap


@pytest.fixture
def sample() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    risk = np.round(rng.beta(2, 12, 4000), 3)  # rounded: plenty of ties
    y = rng.binomial(1, risk).astype(float)
    return y, risk


def test_point_metrics_match_scikit_learn(sample) -> None:
    y, risk = sample
    ones = np.ones((1, len(y)))
    scored = weighted.Scored.of(y, risk)
    assert weighted.auroc(scored, ones)[0] == pytest.approx(roc_auc_score(y, risk), abs=1e-12)
    assert weighted.auprc(scored, ones)[0] == pytest.approx(
        average_precision_score(y, risk), abs=1e-12
    )
    assert weighted.brier(y, risk, ones)[0] == pytest.approx(brier_score_loss(y, risk))


def test_weights_equal_repeated_rows(sample) -> None:
    y, risk = sample
    counts = np.random.default_rng(1).integers(0, 3, len(y))
    rep_y, rep_risk = np.repeat(y, counts), np.repeat(risk, counts)
    w = counts[None, :].astype(float)
    assert weighted.auroc(weighted.Scored.of(y, risk), w)[0] == pytest.approx(
        roc_auc_score(rep_y, rep_risk), abs=1e-12
    )
    assert weighted.auprc(weighted.Scored.of(y, risk), w)[0] == pytest.approx(
        average_precision_score(rep_y, rep_risk), abs=1e-12
    )


def test_calibration_measures_see_miscalibration(sample) -> None:
    y, risk = sample
    ones = np.ones((1, len(y)))
    bins = weighted.quantile_bins(risk, 10)
    # the labels were drawn from the risks: calibrated by construction
    assert weighted.calibration_slope(y, risk, ones)[0] == pytest.approx(1.0, abs=0.15)
    assert abs(weighted.calibration_intercept(y, risk, ones)[0]) < 0.1
    assert weighted.ece(y, risk, bins, ones)[0] < 0.02
    doubled = np.clip(risk * 2, 0, 0.99)
    assert weighted.calibration_intercept(y, doubled, ones)[0] < -0.4
    assert weighted.ece(y, doubled, weighted.quantile_bins(doubled, 10), ones)[0] > 0.05
    squashed = 1 / (1 + np.exp(-(np.log(risk / (1 - risk)) * 2)))  # overconfident
    assert weighted.calibration_slope(y, squashed, ones)[0] < 0.7


def test_threshold_rates(sample) -> None:
    y, risk = sample
    out = {k: v[0] for k, v in weighted.at_threshold(y, risk, 0.2, np.ones((1, len(y)))).items()}
    alert = risk >= 0.2
    assert out["sensitivity"] == pytest.approx((alert & (y == 1)).sum() / (y == 1).sum())
    assert out["ppv"] == pytest.approx((alert & (y == 1)).sum() / alert.sum())
    assert out["alerts_per_100"] == pytest.approx(100 * alert.mean())
    assert out["number_needed_to_evaluate"] == pytest.approx(1 / out["ppv"])


def test_cluster_bootstrap_resamples_patients_reproducibly(sample) -> None:
    y, risk = sample
    patients = pd.Series(np.arange(len(y)) // 4)  # four encounters per patient
    boot = ClusterBootstrap.over(patients, replicates=200, seed=5, ci_level=0.95)
    counts = boot.counts
    # every encounter of a patient carries the same weight in a replicate
    assert (counts.reshape(200, -1, 4) == counts.reshape(200, -1, 4)[:, :, :1]).all()
    assert (counts.sum(axis=1) == len(y)).all()  # as many patients drawn as exist
    scored = weighted.Scored.of(y, risk)
    first = boot.estimate(lambda w: weighted.auroc(scored, w))
    again = ClusterBootstrap.over(patients, 200, 5, 0.95).estimate(
        lambda w: weighted.auroc(scored, w)
    )
    assert first == again
    assert first.low < first.value < first.high
    assert first.high - first.low < 0.1
