"""The fallback policy and what each mode shows for an instance the model could not score."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from hospital_mlops.inference.fallback import (
    CachedScore,
    FallbackPolicyError,
    fallback_answer,
    load_fallback_policy,
)
from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records
from hospital_mlops.inference.score_cache import last_score
from hospital_mlops.paths import config_path

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT = load_fallback_policy()


def _policy(**change) -> object:
    return DEFAULT.model_copy(update=change)


def _cached(hours_old: float) -> CachedScore:
    return CachedScore("p-1", 0.31, "high", True, NOW - timedelta(hours=hours_old), "m/3")


def test_the_shipped_default_is_no_score_and_says_so() -> None:
    answer = fallback_answer(DEFAULT, {"number_inpatient": 5}, "unavailable", _cached(1), NOW)
    assert answer.mode == "no_score" and answer.fallback
    assert answer.risk is None and answer.alert is None
    assert "unavailable" in answer.message and "usual" in answer.message
    assert answer.as_dict()["cause_text"] == "the model service did not answer"


def test_the_static_rule_names_the_criteria_met_and_is_not_a_risk() -> None:
    policy = _policy(mode="static_rule")
    flagged = fallback_answer(
        policy,
        {"number_inpatient": 3, "number_emergency": 0, "time_in_hospital": 9},
        "not_ready",
        None,
        NOW,
    )
    assert flagged.mode == "static_rule" and flagged.alert is True and flagged.risk is None
    assert flagged.criteria_met == ["number_inpatient ≥ 2", "time_in_hospital ≥ 7"]
    assert "not the model's risk" in flagged.message and "number_inpatient ≥ 2" in flagged.message
    clear = fallback_answer(
        policy,
        {"number_inpatient": 0, "number_emergency": 1, "time_in_hospital": 3},
        "failed",
        None,
        NOW,
    )
    assert clear.mode == "static_rule" and clear.alert is False and clear.criteria_met == []


def test_a_rule_that_cannot_be_checked_does_not_claim_the_patient_is_clear() -> None:
    policy = _policy(mode="static_rule")
    partial = fallback_answer(
        policy, {"number_inpatient": 0, "time_in_hospital": "long"}, "unavailable", None, NOW
    )
    assert partial.mode == "no_score" and partial.alert is None
    assert partial.criteria_unknown == ["number_emergency", "time_in_hospital"]
    # but a criterion that is met still flags, whatever else is missing
    met = fallback_answer(policy, {"number_emergency": 4}, "unavailable", None, NOW)
    assert met.mode == "static_rule" and met.alert is True
    assert fallback_answer(policy, "not an object", "unavailable", None, NOW).mode == "no_score"


def test_a_cached_score_is_shown_with_its_age_only_while_young_enough() -> None:
    policy = _policy(mode="last_cached_score")
    young = fallback_answer(policy, {}, "unavailable", _cached(3), NOW)
    assert young.mode == "last_cached_score"
    assert (young.risk, young.band, young.alert, young.age_hours) == (0.31, "high", True, 3.0)
    assert young.prediction_id == "p-1" and young.model_version == "m/3"
    assert "31%" in young.message and "3 hours old" in young.message
    old = fallback_answer(policy, {}, "unavailable", _cached(13), NOW)
    assert old.mode == "no_score" and old.risk is None
    future = fallback_answer(policy, {}, "unavailable", _cached(-1), NOW)  # clock skew
    assert future.mode == "no_score"
    ruled = _policy(mode="last_cached_score", when_no_cached_score="static_rule")
    assert fallback_answer(ruled, {"number_inpatient": 2}, "failed", None, NOW).alert is True


def _write(tmp_path: Path, change: dict) -> Path:
    """The first use case's document, changed, as a file of its own."""
    raw = next(yaml.safe_load_all(config_path("fallback.yaml").read_text()))
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        node = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[leaf] = value
    path = tmp_path / "fallback.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mode": "guess"}, "mode"),
        ({"last_cached_score.max_age_hours": 0}, "last_cached_score.max_age_hours"),
        ({"static_rule.any_of": []}, "static_rule.any_of"),
        ({"messages.cached": "{risk_percent}% for {patient_name}"}, "patient_name"),
        ({"messages.no_score": "unbalanced {"}, "messages.no_score"),
        ({"static_rule.any_of.0.field": "race"}, "'race' is not a numeric input"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_a_malformed_policy_fails_naming_its_path(tmp_path, change, message) -> None:
    with pytest.raises(FallbackPolicyError) as caught:
        load_fallback_policy(_write(tmp_path, change))
    assert message in str(caught.value)


def test_the_cache_reads_the_encounters_newest_score(store_url: str) -> None:
    log = PredictionLog(store_url)
    served = ServedModel("readmission-30d", 3, "0" * 64, "fs", "", "diabetes130")
    token = "tok" + "0" * 20
    rows = []
    for pid, when, risk in [
        ("a" * 36, "2026-03-01T08:00:00Z", 0.2),
        ("b" * 36, "2026-03-01T09:00:00.5Z", 0.4),  # the newest, in another ISO precision
        ("c" * 36, "2026-03-01T09:00:00Z", 0.1),
    ]:
        answer = {
            "prediction_id": pid,
            "scored_at": when,
            "risk": risk,
            "band": "high" if risk > 0.3 else "moderate",
            "alert": risk > 0.3,
            "model_version": "readmission-30d/3",
        }
        rows += records("r", "v1", served, [{"encounter_token": token}], [answer])
    log.write(rows)
    cached = last_score(log, token, "readmission-30d")
    assert cached is not None and cached.prediction_id == "b" * 36
    assert (cached.risk, cached.band, cached.alert) == (0.4, "high", True)
    assert cached.scored_at == datetime(2026, 3, 1, 9, 0, 0, 500000, tzinfo=UTC)
    assert last_score(log, "other" + "0" * 20, "readmission-30d") is None
    assert last_score(log, token, "another-model") is None
    log.close()


def test_each_use_case_has_its_own_policy_checked_against_its_own_inputs(tmp_path) -> None:
    from hospital_mlops.inference.fallback import load_fallback_policies

    policies = load_fallback_policies()
    assert set(policies) == {"readmission_30d_discharge", "post_acute_at_admission"}
    admission = load_fallback_policy(use_case="post_acute_at_admission")
    assert admission.mode == "last_cached_score" and "admission" in admission.messages.cached
    answer = fallback_answer(admission, {"number_inpatient": 3}, "unavailable", _cached(2), NOW)
    assert answer.mode == "last_cached_score" and answer.risk == pytest.approx(0.31)
    # the first use case's, by its id too
    assert load_fallback_policy(use_case="readmission_30d_discharge") == DEFAULT
    documents = list(yaml.safe_load_all(config_path("fallback.yaml").read_text()))
    # a stay-time rule is not an admission model's input: refused, naming the use case
    stay = dict(documents[1], static_rule={**documents[1]["static_rule"], "any_of": [
        {"field": "time_in_hospital", "at_least": 7}]})  # fmt: skip
    path = tmp_path / "fallback.yaml"
    path.write_text(yaml.safe_dump_all([documents[0], stay]))
    with pytest.raises(FallbackPolicyError, match=r"'time_in_hospital'.*post_acute_at_admission"):
        load_fallback_policies(path)
    path.write_text(yaml.safe_dump_all([documents[0], documents[1], documents[1]]))
    with pytest.raises(FallbackPolicyError, match="document 3 repeats use case"):
        load_fallback_policies(path)
    path.write_text(yaml.safe_dump_all([documents[1]]))
    with pytest.raises(FallbackPolicyError, match="no document for the first use case"):
        load_fallback_policies(path)
    with pytest.raises(FallbackPolicyError, match="no document for use case 'triage'"):
        load_fallback_policy(use_case="triage")
