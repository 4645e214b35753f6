"""Explanations on real diabetes130 encounters and a model trained on them: plain clinician
wording, the raw-input codec, KernelSHAP additivity, the exact TreeSHAP audit part, and the
stability of the clinician's reasons under clinically meaningless changes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.data.splits import TemporalSplit, temporal_split
from hospital_mlops.features import (
    DIABETES130_INPUTS,
    FeatureSet,
    build_features,
    feature_set_for,
    served_inputs,
)
from hospital_mlops.features.served import jsonable
from hospital_mlops.model.explain import (
    JARGON,
    MEDICATION_GROUP,
    MISSING,
    RawCodec,
    RawKernelShap,
    clinician_view,
    plain_features,
    plain_phrase,
    technical_view,
    training_background,
)
from hospital_mlops.model.explain_stability import (
    PERTURBATIONS,
    jaccard,
    measure_stability,
    overlap,
)
from hospital_mlops.model.reasons import attribute
from hospital_mlops.model.scoring import PRIOR_ENCOUNTERS, score
from hospital_mlops.model.train import RiskModel, logit, train_risk_model
from hospital_mlops.use_case import SplitPolicy, TrainingConfig, load_use_case

SAMPLE = 200  # real test-period encounters per check
TOP_K = 3


@dataclass
class Real:
    spec: Any
    tables: dict[str, pd.DataFrame]
    policy: SplitPolicy
    split: TemporalSplit
    test_instances: list[dict[str, Any]]  # raw v1 instances of the test period, in order
    test_features: pd.DataFrame  # the pipeline's features of the same encounters


_cache: dict[Any, Any] = {}  # shared with the server tests of the same session: built once


SERVED = served_inputs(feature_set_for("diabetes130"))
RAW_FIELDS = (*SERVED.inputs, PRIOR_ENCOUNTERS)
RISK = "Chance of a hospital readmission within 30 days"


def real_data(catalog: Any, d130_small: Any) -> Real:
    """The sub-sampled real extract through the pipeline's own normalize, features and split."""
    key = ("real", str(d130_small))
    if key not in _cache:
        _cache[key] = _real_data(catalog, d130_small)
    return _cache[key]  # type: ignore[no-any-return]


def _real_data(catalog: Any, d130_small: Any) -> Real:
    spec = catalog.source("diabetes130")
    tables = read_extract(d130_small, spec)
    normalized, _ = normalize_extract(tables, spec, HmacKey(b"k" * 40, False))
    features, _ = build_features("diabetes130", normalized)
    policy = load_use_case().for_source("diabetes130").split
    split = temporal_split(features, policy, feature_set_for("diabetes130").label)
    encounters = normalized["encounters"].set_index("encounter_token")
    rows = encounters.loc[split.test["encounter_token"]]
    instances = [
        {**{c: jsonable(row[c]) for c in DIABETES130_INPUTS}, PRIOR_ENCOUNTERS: int(prior)}
        for (_, row), prior in zip(
            rows.iterrows(), split.test["earlier_encounters_in_extract"], strict=True
        )
    ]
    return Real(spec, tables, policy, split, instances, split.test)


def real_model(real: Real) -> RiskModel:
    key = ("model", id(real))
    if key not in _cache:
        fs = feature_set_for("diabetes130")
        _cache[key] = train_risk_model(
            real.split.train, real.split.validation, fs, TrainingConfig(max_rounds=80)
        )
    return _cache[key]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def real(catalog, d130_small) -> Real:
    return real_data(catalog, d130_small)


@pytest.fixture(scope="module")
def model(real) -> RiskModel:
    return real_model(real)


@pytest.fixture(scope="module")
def background(real) -> list[dict[str, Any]]:
    return training_background(real.tables, real.spec, real.policy, 8, SERVED)


def _score(real: Real, model: RiskModel, instances: list[dict[str, Any]]) -> list[dict]:
    out: list[dict] = []
    for start in range(0, len(instances), 100):  # the predictor's batch cap
        out += score(instances[start : start + 100], SERVED, model, 0.15, "test/1")
    return out


def _sample(real: Real, n: int = SAMPLE) -> list[dict[str, Any]]:
    picks = np.linspace(0, len(real.test_instances) - 1, n).round().astype(int)
    return [real.test_instances[i] for i in picks]


# --- clinician view ----------------------------------------------------------------------------


def test_plain_features_equal_the_pipelines_on_real_encounters(real) -> None:
    fs: FeatureSet = feature_set_for("diabetes130")
    names = [f.name for f in fs.features]
    served = pd.DataFrame([plain_features(i, SERVED) for i in real.test_instances])[names]
    pd.testing.assert_frame_equal(
        served, real.test_features[names].reset_index(drop=True), check_dtype=False
    )


def test_every_value_of_every_feature_has_plain_wording() -> None:
    fs = feature_set_for("diabetes130")
    for f in fs.features:
        if f.kind == "categorical":
            values: list[Any] = list(f.allowed or ())
        elif f.kind == "binary":
            values = [0.0, 1.0]
        else:
            low = 5.0 if f.name == "age_years" else max(f.min_value or 0, 1)
            values = [low, low + 10]
        for value in values:
            text = plain_phrase(f.name, value)
            assert text and len(text) <= 80 and "_" not in text, (f.name, value, text)
            assert ":" not in text or f.name == "race", text  # not the generic fallback
            assert not any(word in text.lower() for word in JARGON), text
    # a value no table knows still reads as a sentence, never an error
    wording = {f.name: f.clinical_wording for f in SERVED.feature_set.features}
    assert plain_phrase("insulin", "double", wording) == "Insulin this stay: double"


def test_the_clinician_view_has_top_k_plain_reasons_in_the_predictors_direction(
    real, model
) -> None:
    instances = _sample(real)
    answers = _score(real, model, instances)
    for answer, instance in zip(answers, instances, strict=True):
        view = clinician_view(answer, instance, TOP_K, SERVED, RISK)
        assert len(view["reasons"]) == TOP_K == len(answer["reasons"])
        by_feature = {r["feature"]: r["contribution"] for r in answer["reasons"]}
        for reason in view["reasons"]:
            text = reason["text"]
            assert not any(word in text.lower() for word in JARGON), text
            assert not re.search(r"\d\.\d", text), text  # no decimals: no model numbers leak
            contribution = by_feature[reason["feature"]]
            direction = "raises" if contribution > 0 else "lowers"
            assert reason["direction"] == direction
            assert text.endswith(f", which {direction} the risk")
        assert view["risk"] == answer["risk"] and view["model_version"] == "test/1"
        assert f"{round(100 * answer['risk'])}%" in view["summary"]


def test_known_encounters_read_as_a_clinician_would_say_them(real) -> None:
    instance = dict(real.test_instances[0], number_inpatient=3, discharge_disposition_id=1)
    answer = {
        "prediction_id": "p",
        "risk": 0.2,
        "band": "high",
        "alert": True,
        "model_version": "m/1",
        "reasons": [
            {"feature": "inpatient_admissions_prior_year", "text": "x", "contribution": 0.4},
            {"feature": "discharge_disposition", "text": "x", "contribution": -0.2},
        ],
    }
    texts = [r["text"] for r in clinician_view(answer, instance, TOP_K, SERVED, RISK)["reasons"]]
    assert texts == [
        "3 hospital stays in the past year, which raises the risk",
        "Discharged home, which lowers the risk",
    ]


# --- the raw-input codec -----------------------------------------------------------------------


def test_the_codec_round_trips_real_instances(real) -> None:
    instances = real.test_instances[:2000]
    codec = RawCodec.for_served(SERVED).extended(instances)
    matrix = codec.encode(instances)
    assert matrix.shape == (len(instances), len(RAW_FIELDS)) and matrix.dtype == np.float64
    decoded = codec.decode(matrix)
    assert decoded == [{k: v for k, v in i.items() if v is not None} for i in instances]
    race = RAW_FIELDS.index("race")
    absent = [row for row, i in enumerate(instances) if i["race"] is None]
    assert absent and (matrix[absent, race] == MISSING).all()
    # a diagnosis code never seen before is refused by the unextended codec, not guessed
    with pytest.raises(KeyError, match="diag_1"):
        RawCodec.for_served(SERVED).encode([dict(instances[0], diag_1="V99.9")])


def test_medications_form_one_group_and_every_other_input_its_own(real) -> None:
    names, groups = RawCodec.for_served(SERVED).groups()
    assert len(names) == len(RAW_FIELDS) - 23 + 1 == 21
    assert len(groups[names.index(MEDICATION_GROUP)]) == 23
    assert sorted(i for g in groups for i in g) == list(range(len(RAW_FIELDS)))


def test_the_background_is_real_training_period_encounters(real, background) -> None:
    # deterministic: the same extract and policy give the same rows
    assert training_background(real.tables, real.spec, real.policy, 8, SERVED) == background
    assert len(background) == 8 and set(background[0]) == set(RAW_FIELDS)
    train = real.split.train
    codec = RawCodec.for_served(SERVED).extended(background)
    assert codec.decode(codec.encode(background)) == [
        {k: v for k, v in b.items() if v is not None} for b in background
    ]
    # each row is one of the training period's encounters (its features are a training row)
    lengths = set(train["length_of_stay_days"])
    assert all(b["time_in_hospital"] in lengths for b in background)
    assert not any(str(v).startswith(("enc", "pat")) for b in background for v in b.values())


# --- technical view ----------------------------------------------------------------------------


def test_kernel_shap_over_raw_inputs_adds_up_to_the_risk(real, model, background) -> None:
    seen: list[int] = []

    def risk_of(rows: list[dict[str, Any]]) -> np.ndarray:
        seen.append(len(rows))
        return np.asarray([a["risk"] for a in _score(real, model, rows)])

    kernel = RawKernelShap(RawCodec.for_served(SERVED), background, risk_of, nsamples=64)
    background_risk = np.mean([a["risk"] for a in _score(real, model, background)])
    assert kernel.base_value == pytest.approx(background_risk, abs=1e-9)
    instances = _sample(real, 2)
    answers = _score(real, model, instances)
    for answer, instance in zip(answers, instances, strict=True):
        raw = kernel.explain(instance)
        assert raw.risk == pytest.approx(answer["risk"], abs=1e-9)
        assert raw.base_value + sum(raw.attributions.values()) == pytest.approx(raw.risk, abs=1e-6)
        assert len(raw.attributions) == 21 and any(abs(v) > 1e-4 for v in raw.attributions.values())
        view = technical_view(answer, instance, raw, {"nsamples": 64}, SERVED)
        part = view["kernel_shap"]
        total = part["base_value"] + sum(a["attribution"] for a in part["attributions"])
        assert total == pytest.approx(answer["risk"], abs=1e-6)
        medications = next(a for a in part["attributions"] if a["input"] == MEDICATION_GROUP)
        assert medications["value"]["insulin"] == instance["insulin"]
    assert max(seen) <= 64 * 8 + 1  # duplicates removed before scoring


def test_the_exact_part_uses_every_contribution_when_the_predictor_sends_them(real, model) -> None:
    fs = feature_set_for("diabetes130")
    instances = _sample(real, 20)
    missing_race = next(i for i in real.test_instances if i["race"] is None)
    instances.append(missing_race)
    answers = _score(real, model, instances)
    frame = pd.DataFrame([plain_features(i, SERVED) for i in instances])
    full = attribute(model, frame, fs)
    for row, (answer, instance) in enumerate(zip(answers, instances, strict=True)):
        # the answer as the predictor gives it with "explain": "full"
        answer = {
            **answer,
            "contributions": dict(
                zip([f.name for f in fs.features], full.contributions[row], strict=True)
            ),
            "baseline": float(full.baseline[row]),
        }
        exact = technical_view(answer, instance, None, {}, SERVED)["tree_shap"]
        assert exact["complete"] and len(exact["contributions"]) == len(fs.features)
        total = exact["baseline"] + sum(c["contribution"] for c in exact["contributions"])
        assert total == pytest.approx(float(logit(np.array([answer["risk"]]))[0]), abs=1e-3)
        top = [c["feature"] for c in exact["contributions"][:TOP_K]]
        assert top == [r["feature"] for r in answer["reasons"]]
    view = technical_view(answer, instance, None, {}, SERVED)
    assert "kernel_shap" not in view and view["missing_inputs"] == ["race"]
    assert {"feature": "race", "value": "missing"}.items() <= next(
        c for c in view["tree_shap"]["contributions"] if c["feature"] == "race"
    ).items()


def test_without_full_contributions_the_exact_part_says_it_is_incomplete(real, model) -> None:
    instance = _sample(real, 1)[0]
    (answer,) = _score(real, model, [instance])
    exact = technical_view(answer, instance, None, {}, SERVED)["tree_shap"]
    assert exact["complete"] is False and exact["baseline"] is None
    assert [c["feature"] for c in exact["contributions"]] == [
        r["feature"] for r in answer["reasons"]
    ]


# --- stability ---------------------------------------------------------------------------------


def test_overlap_measures() -> None:
    assert overlap(["a", "b", "c"], ["c", "b", "a"]) == 1.0
    assert overlap(["a", "b", "c"], ["a", "b", "d"]) == pytest.approx(2 / 3)
    assert jaccard(["a", "b", "c"], ["a", "b", "d"]) == pytest.approx(0.5)
    assert overlap(["a"], ["b", "c", "d"]) == 0.0 and overlap([], []) == 1.0


def test_perturbations_change_the_instance_and_nothing_meaningful(real) -> None:
    instance = real.test_instances[0]
    meaningful = set(RAW_FIELDS) - {"num_lab_procedures", "num_medications"}
    for p in PERTURBATIONS:
        changed = p.apply(dict(instance))
        assert all(changed[k] == instance[k] for k in meaningful), p.name
        if p.name == "inputs_reordered":
            assert changed == instance and list(changed) != list(instance)
        else:
            assert changed != instance and p.why_meaningless
    edge = dict(instance, num_lab_procedures=200)
    assert PERTURBATIONS[0].apply(edge)["num_lab_procedures"] == 199  # stays in range


def test_clinician_reasons_are_stable_under_meaningless_changes(real, model) -> None:
    def reasons_of(instances: list[dict[str, Any]]) -> list[list[str]]:
        answers = _score(real, model, instances)
        return [
            [r["feature"] for r in clinician_view(a, i, TOP_K, SERVED, RISK)["reasons"]]
            for a, i in zip(answers, instances, strict=True)
        ]

    report = measure_stability(_sample(real), reasons_of)
    assert report.instances == SAMPLE
    print(report.as_dict())
    assert report.mean_overlap >= 0.8, report.as_dict()
    assert report.per_perturbation["inputs_reordered"] == 1.0
    assert 0 < report.mean_jaccard <= report.mean_overlap
