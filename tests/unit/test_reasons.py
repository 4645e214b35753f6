from __future__ import annotations

import numpy as np
import pytest

from hospital_mlops.features import feature_set_for
from hospital_mlops.model.reasons import attribute, reason_codes, reason_codes_of_rows
from hospital_mlops.model.train import logit, train_risk_model
from hospital_mlops.use_case import TrainingConfig
from tests.unit.test_registry import _features


@pytest.fixture(scope="module")
def fitted():
    fs = feature_set_for("diabetes130")
    model = train_risk_model(
        _features(4000, 1), _features(1500, 2), fs, TrainingConfig(max_rounds=60)
    )
    return fs, model


def test_contributions_add_up_to_the_calibrated_risk(fitted) -> None:
    fs, model = fitted
    frame = _features(300, 5)
    attribution = attribute(model, frame, fs)
    assert attribution.contributions.shape == (300, len(fs.features))
    np.testing.assert_allclose(
        attribution.logit, logit(model.predict_risk(frame, fs)), rtol=0, atol=2e-4
    )


def test_reasons_are_the_largest_contributions_in_clinical_words(fitted) -> None:
    fs, model = fitted
    frame = _features(50, 6)
    frame.loc[0, "inpatient_admissions_prior_year"] = 45  # the planted risk factor, extreme
    frame.loc[1, "race"] = None
    attribution = attribute(model, frame, fs)
    reasons = reason_codes(attribution, frame, fs)
    assert all(1 <= len(r) <= 3 for r in reasons)
    for row, row_reasons in enumerate(reasons):
        sizes = [abs(r.contribution) for r in row_reasons]
        assert sizes == sorted(sizes, reverse=True)
        for r in row_reasons:
            wording = next(f.clinical_wording for f in fs.features if f.name == r.feature)
            assert r.text.startswith(wording + ": ")
            assert ("raises" in r.text) == (r.contribution > 0)
            j = [f.name for f in fs.features].index(r.feature)
            assert r.contribution == pytest.approx(attribution.contributions[row, j], abs=1e-6)
    top = reasons[0][0]
    assert top.feature == "inpatient_admissions_prior_year"
    assert top.text == "Hospital admissions in the past year: 45 (raises the risk)"
    missing = [r for r in reasons[1] if r.feature == "race"]
    assert all("not recorded" in r.text for r in missing)


def test_reasons_of_feature_rows_equal_those_of_a_frame(fitted) -> None:
    fs, model = fitted
    frame = _features(40, 7)
    frame.loc[0, "race"] = None
    frame.loc[1:3, "inpatient_admissions_prior_year"] = [np.nan, 45, 45]
    attribution = attribute(model, frame, fs)
    rows = frame.to_dict("records")
    assert reason_codes_of_rows(attribution, rows, fs) == reason_codes(attribution, frame, fs)
    texts = [r.text for row in reason_codes_of_rows(attribution, rows, fs) for r in row]
    assert any("not recorded" in t for t in texts)
