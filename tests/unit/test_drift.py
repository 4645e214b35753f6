"""Drift detection on real diabetes130 encounters: the training-time reference, both backends
(alibi-detect and scipy) on unchanged and shifted populations, request/response pairing, the
results store and the registered reference."""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.catalog import load_catalog
from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.drift.inference_events import InferenceEvent, binary_headers, parse_binary_event
from hospital_mlops.drift.monitor import DriftMonitor, ScoredWindow
from hospital_mlops.drift.reference import (
    BASELINE_FILE,
    REFERENCE_FILE,
    SCORE_COLUMN,
    DriftReference,
    DriftReferenceError,
    calibrate_reference,
    read_baseline,
    read_reference,
    write_baseline,
    write_reference,
)
from hospital_mlops.drift.store import DriftStore, baseline_beside, reference_from_registry
from hospital_mlops.drift.tester import (
    MIN_EXPECTED,
    RARE_CATEGORY,
    DriftResult,
    DriftTester,
    FeatureEncoding,
    SortedSample,
    ks_2samp_asymp,
)
from hospital_mlops.features import (
    DIABETES130_INPUTS,
    ServedInputs,
    build_features,
    diabetes130_features,
    feature_set_for,
    served_inputs,
)
from hospital_mlops.features.served import jsonable
from hospital_mlops.model.scoring import validate_instances
from hospital_mlops.model.train import RiskModel, train_risk_model
from hospital_mlops.use_case import TrainingConfig

FS = feature_set_for("diabetes130")
P_VALUE = 0.05
WINDOW = 1000
REFERENCE_ROWS = 8000
BATCH = 100  # instances per logged request, the predictor's limit


@dataclass(frozen=True)
class Population:
    """Real encounters as the pipeline saw them (features) and as an EHR sends them (raw
    request instances), in one random order, with a small model trained on them."""

    served: ServedInputs
    features: pd.DataFrame
    instances: list[dict[str, object]]
    model: RiskModel


@functools.lru_cache(maxsize=1)
def population(extract: Path) -> Population:
    spec = load_catalog().source("diabetes130")
    normalized, _ = normalize_extract(read_extract(extract, spec), spec, HmacKey(b"k" * 40, False))
    pipeline, _ = build_features("diabetes130", normalized)
    encounters = normalized["encounters"].set_index("encounter_token")
    rows = encounters.loc[pipeline["encounter_token"], list(DIABETES130_INPUTS)]
    instances = [
        {**{c: jsonable(v) for c, v in row.items()}, "prior_encounters": int(prior)}
        for row, prior in zip(
            rows.to_dict("records"), pipeline["earlier_encounters_in_extract"], strict=True
        )
    ]
    order = np.random.default_rng(3).permutation(len(pipeline))
    features = pipeline.iloc[order].reset_index(drop=True)
    shuffled = [instances[i] for i in order]
    model = train_risk_model(
        features.iloc[:6000], features.iloc[6000:8000], FS, TrainingConfig(max_rounds=30)
    )
    return Population(served_inputs(feature_set_for("diabetes130")), features, shuffled, model)


def reference_file(pop: Population, directory: Path) -> Path:
    """The reference as training writes it, from the first REFERENCE_ROWS encounters; every
    window below is drawn from the others."""
    path = directory / REFERENCE_FILE
    if not path.exists():
        write_reference(path, pop.features.iloc[:REFERENCE_ROWS], pop.model, FS, REFERENCE_ROWS)
    return path


def event_pairs(
    pop: Population, instances: list[dict[str, object]], prefix: str
) -> list[tuple[InferenceEvent, InferenceEvent]]:
    """What the inference logger posts: each request and the predictor's answer (its risk
    computed from the served features), as binary CloudEvents parsed by the detector's parser."""
    valid = validate_instances(instances, pop.served, max_instances=len(instances))
    risk = pop.model.predict_risk(
        diabetes130_features(valid.encounters, valid.prior_encounters), FS
    )
    pairs = []
    for n, start in enumerate(range(0, len(instances), BATCH)):
        answer = {
            "predictions": [
                {"risk": float(r), "model_version": "m/1"} for r in risk[start : start + BATCH]
            ]
        }
        request = {"instances": instances[start : start + BATCH]}
        event_id = f"{prefix}-{n}"
        pairs.append(
            (
                _event(event_id, "request", request),
                _event(event_id, "response", answer),
            )
        )
    return pairs


def windows_of(
    tester: DriftTester, pop: Population, instances: list[dict[str, object]], prefix: str
) -> list[ScoredWindow]:
    monitor = DriftMonitor(tester, pop.served, WINDOW)
    windows = []
    for request, response in event_pairs(pop, instances, prefix):
        windows += monitor.collect(request).windows
        windows += monitor.collect(response).windows
    return windows


@pytest.fixture(scope="module")
def pop(d130_small: Path) -> Population:
    return population(d130_small)


@pytest.fixture(scope="module")
def reference(pop: Population, tmp_path_factory: pytest.TempPathFactory) -> DriftReference:
    return read_reference(reference_file(pop, tmp_path_factory.mktemp("reference")))


@pytest.fixture(scope="module")
def testers(reference: DriftReference) -> dict[str, DriftTester]:
    return {b: DriftTester(reference, FS, b, P_VALUE, "m/1") for b in ("alibi-detect", "scipy")}


def _both(testers: dict[str, DriftTester], window: ScoredWindow) -> dict[str, DriftResult]:
    results = {
        b: t.test(window.features, window.scores, window.window_id) for b, t in testers.items()
    }
    a, s = results["alibi-detect"], results["scipy"]
    # Same tests, same numbers (alibi-detect keeps p-values in float32), same decision.
    assert a.is_drift == s.is_drift and a.drifted_features == s.drifted_features
    for name in a.feature_p_values:
        assert a.feature_p_values[name] == pytest.approx(
            s.feature_p_values[name], rel=1e-4, abs=1e-6
        )
    assert a.score_p_value == pytest.approx(s.score_p_value, rel=1e-4, abs=1e-6)
    return results


# --- the reference ------------------------------------------------------------------------------


def test_reference_is_a_deterministic_token_free_sample_with_its_feature_set(
    pop: Population, tmp_path: Path
) -> None:
    train = pop.features.iloc[:REFERENCE_ROWS]
    started = time.perf_counter()
    info = write_reference(tmp_path / "a.parquet", train, pop.model, FS, rows=2000)
    assert time.perf_counter() - started < 2.0
    write_reference(tmp_path / "b.parquet", train, pop.model, FS, rows=2000)
    a, b = read_reference(tmp_path / "a.parquet"), read_reference(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a.features, b.features)
    assert np.array_equal(a.scores, b.scores)
    assert len(a.features) == 2000 and info["rows"] == 2000 and info["slice_rows"] == len(train)
    assert a.feature_set_version == FS.version and a.info["slice"] == "test"
    # model features only: no encounter/patient tokens, no label
    assert list(a.features.columns) == [f.name for f in FS.features]
    # the score column is the model's own calibrated risk for those rows
    assert np.allclose(a.scores, pop.model.predict_risk(a.features, FS))
    assert a.scores.min() > 0 and a.scores.max() < 1
    # capped at the slice's size
    small = write_reference(tmp_path / "c.parquet", train.head(700), pop.model, FS, rows=2000)
    assert small["rows"] == 700


def test_a_reference_from_another_feature_set_or_without_provenance_is_refused(
    reference: DriftReference, tmp_path: Path
) -> None:
    other = DriftReference(
        reference.features, reference.scores, {**reference.info, "feature_set_version": "x@1"}
    )
    with pytest.raises(DriftReferenceError, match="not the same features"):
        DriftTester(other, FS, "scipy", P_VALUE, "m/1")
    plain = tmp_path / "plain.parquet"
    reference.features.assign(**{SCORE_COLUMN: reference.scores}).to_parquet(plain)
    with pytest.raises(DriftReferenceError, match=r"no hospital_mlops\.drift_reference record"):
        read_reference(plain)


def test_categories_come_from_the_reference_and_rare_or_new_values_share_one_code(
    reference: DriftReference,
) -> None:
    encoding = FeatureEncoding.from_reference(reference.features, FS, WINDOW)
    assert set(encoding.categories) == {f.name for f in FS.features if f.kind != "numeric"}
    least = MIN_EXPECTED * len(reference.features) / WINDOW
    codes = encoding.encode(reference.features)
    for name, known in encoding.categories.items():
        labels = reference.features[name].astype(object)
        labels = labels.where(labels.notna(), "missing").astype(str)
        counts = labels.value_counts()
        # tested: the categories expected MIN_EXPECTED times or more in a window; the rest pooled
        assert set(known) == set(counts[counts >= least].index), name
        assert set(encoding.rare[name]) == set(counts[counts < least].index), name
        column = codes[:, encoding.names.index(name)].astype(int)
        pool = encoding.pool_code[name]
        expected = [known.index(v) if v in known else pool for v in labels]
        assert column.tolist() == expected, name
    # sex_male's missing value is one row in thousands: pooled, never its own cell
    assert "missing" in encoding.rare["sex_male"]
    window = reference.features.head(3).copy()
    window.loc[0, "race"] = "a value never seen"
    window.loc[1, "sex_male"] = np.nan
    window.loc[2, "num_procedures"] = np.nan
    encoded = encoding.encode(window)
    race, sex = encoding.names.index("race"), encoding.names.index("sex_male")
    assert encoded[0, race] == encoding.pool_code["race"]
    assert RARE_CATEGORY in encoding.category_label("race", encoded[0, race])
    assert encoded[1, sex] == encoding.pool_code["sex_male"]
    assert encoded[2, encoding.names.index("num_procedures")] == -1.0


@pytest.mark.parametrize("backend", ["alibi-detect", "scipy"])
def test_one_unusual_encounter_is_not_drift_but_many_are(
    pop: Population, reference: DriftReference, backend: str
) -> None:
    """Chi-square on a cell expected 0.05 times calls a single encounter drift; pooled, it takes
    a real change in the share."""
    size = 250  # small windows are where an expected count of 0.03 happens
    tester = DriftTester(reference, FS, backend, P_VALUE, "m/1", size)  # type: ignore[arg-type]
    window = pop.features.iloc[REFERENCE_ROWS : REFERENCE_ROWS + size].reset_index(drop=True)
    scores = pop.model.predict_risk(window, FS)
    assert "sex_male" not in tester.test(window, scores).drifted_features
    one = window.copy()
    one.loc[0, "sex_male"] = np.nan  # the rare "Unknown/Invalid" sex
    one.loc[1, "race"] = "a value never seen"
    result = tester.test(one, scores)
    assert "sex_male" not in result.drifted_features and "race" not in result.drifted_features
    many = window.copy()
    many.loc[: size // 5, "race"] = "a value never seen"  # a fifth of the window
    assert "race" in tester.test(many, scores).drifted_features


# --- the tests on real encounters ---------------------------------------------------------------


def test_unchanged_population_raises_no_alarm_with_either_backend(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    rest = pop.features.iloc[REFERENCE_ROWS:].reset_index(drop=True)
    risk = pop.model.predict_risk(rest, FS)
    windows = [
        ScoredWindow(
            f"w{n}", rest.iloc[start : start + WINDOW], risk[start : start + WINDOW], "", ""
        )
        for n, start in enumerate(range(0, len(rest) - WINDOW + 1, WINDOW))
    ]
    assert len(windows) >= 6
    results = [_both(testers, w) for w in windows]
    alarms = sum(r["scipy"].is_drift for r in results)
    # Bonferroni over 22 features + the score at 0.05: at most one false alarm in six windows
    assert alarms <= 1, [r["scipy"].drifted_features for r in results]
    first = results[0]["alibi-detect"]
    assert first.window_size == WINDOW and first.backend == "alibi-detect"
    assert first.threshold == pytest.approx(P_VALUE / (len(FS.features) + 1))
    assert set(first.feature_p_values) == {f.name for f in FS.features}
    assert min(first.feature_p_values.values()) > first.threshold


def test_a_window_filled_from_logged_events_is_tested_like_the_pipelines_features(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    instances = pop.instances[REFERENCE_ROWS : REFERENCE_ROWS + WINDOW]
    (window,) = windows_of(testers["scipy"], pop, instances, "same")
    direct = pop.features.iloc[REFERENCE_ROWS : REFERENCE_ROWS + WINDOW]
    served = testers["scipy"].test(window.features, window.scores)
    piped = testers["scipy"].test(direct, pop.model.predict_risk(direct, FS))
    assert served.feature_p_values == piped.feature_p_values
    assert served.score_p_value == pytest.approx(piped.score_p_value)
    assert not served.is_drift


def test_more_prior_admissions_are_detected_by_both_backends(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    shifted = [
        {**i, "number_inpatient": min(int(i["number_inpatient"]) + 1, 50)}  # type: ignore[call-overload]
        for i in pop.instances[REFERENCE_ROWS : REFERENCE_ROWS + WINDOW]
    ]
    (window,) = windows_of(testers["scipy"], pop, shifted, "inpatient")
    results = _both(testers, window)
    for result in results.values():
        assert result.is_drift and result.feature_drift
        assert "inpatient_admissions_prior_year" in result.drifted_features
        assert result.feature_p_values["inpatient_admissions_prior_year"] < 1e-6
        assert "age_years" not in result.drifted_features  # only what changed
        assert result.score_drift  # prior admissions drive the risk up


def test_an_older_case_mix_is_detected_by_both_backends(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    old = [
        i for i in pop.instances[REFERENCE_ROWS:] if i["age"] in ("[70-80)", "[80-90)", "[90-100)")
    ]
    (window,) = windows_of(testers["scipy"], pop, old[:WINDOW], "older")
    for result in _both(testers, window).values():
        assert result.is_drift and "age_years" in result.drifted_features
        assert result.feature_distances["age_years"] > 0.3  # KS statistic


def test_the_scipy_ks_is_ks_2samp_to_the_last_bit(reference: DriftReference) -> None:
    from scipy.stats import ks_2samp

    rng = np.random.default_rng(5)
    columns = [
        reference.features[f.name].to_numpy(dtype="float64")
        for f in FS.features
        if f.kind == "numeric"
    ]
    cases: list[tuple[np.ndarray, np.ndarray]] = [
        (c, rng.choice(c, 1000) + shift) for c in columns for shift in (0, 1)
    ]
    cases.append((reference.scores, rng.beta(2, 9, 700)))  # continuous, no ties
    cases.append((rng.normal(size=5000), rng.normal(size=1000)))
    for ref, sample in cases:
        expected = ks_2samp(ref, sample, method="asymp")
        assert ks_2samp_asymp(SortedSample.of(ref), sample) == (
            float(expected.statistic),
            float(expected.pvalue),
        )


def test_a_window_test_is_fast_enough_to_run_inline(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    features = pop.features.iloc[REFERENCE_ROWS : REFERENCE_ROWS + WINDOW]
    scores = pop.model.predict_risk(features, FS)
    for tester in testers.values():
        elapsed = []
        for _ in range(3):
            started = time.perf_counter()
            tester.test(features, scores)
            elapsed.append(time.perf_counter() - started)
        # generous on a shared 2-core machine; benchmarks/bench_drift.py measures the target
        assert min(elapsed) < 0.5


# --- pairing ------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _monitor(pop: Population, testers: dict[str, DriftTester], **kwargs: object) -> DriftMonitor:
    return DriftMonitor(testers["scipy"], pop.served, 30, **kwargs)  # type: ignore[arg-type]


def _event(event_id: str, kind: str, body: object) -> InferenceEvent:
    headers = binary_headers(event_id, kind, "readmission")  # type: ignore[arg-type]
    return parse_binary_event(headers, json.dumps(body).encode())


def test_pairs_by_event_id_in_either_order_and_carries_the_remainder(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    monitor = _monitor(pop, testers)
    pairs = event_pairs(pop, pop.instances[REFERENCE_ROWS : REFERENCE_ROWS + 20], "p")
    pairs += event_pairs(pop, pop.instances[REFERENCE_ROWS + 20 : REFERENCE_ROWS + 40], "q")
    (req_a, resp_a), (req_b, resp_b) = pairs
    assert monitor.collect(resp_a).windows == []  # the response may arrive first
    assert monitor.collect(req_b).windows == []
    assert monitor.pending_events == 2 and monitor.buffered_rows == 0
    assert monitor.collect(req_a).windows == []
    assert monitor.buffered_rows == 20 and monitor.pending_events == 1
    (window,) = monitor.collect(resp_b).windows
    assert len(window.features) == 30 and len(window.scores) == 30
    assert monitor.buffered_rows == 10 and monitor.pending_events == 0
    # the window holds the served features of those encounters, in arrival order
    expected = pop.features.iloc[REFERENCE_ROWS : REFERENCE_ROWS + 30]
    names = [f.name for f in FS.features]
    pd.testing.assert_frame_equal(
        window.features[names].reset_index(drop=True), expected[names].reset_index(drop=True)
    )
    assert np.array_equal(
        window.scores[:20], np.asarray([p["risk"] for p in resp_a.data["predictions"]])
    )
    assert monitor.received == {"request": 2, "response": 2} and not monitor.rejected


def test_encounters_outside_the_intended_use_stay_out_of_the_windows_and_are_counted(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    """Deaths and hospice discharges are scored (with a limitation) but are not in the
    reference's population: in a window they would read as a shift in discharge disposition."""
    monitor = _monitor(pop, testers)
    served = list(pop.instances[REFERENCE_ROWS : REFERENCE_ROWS + 40])
    for i in (3, 17, 18, 35):
        served[i] = {**served[i], "discharge_disposition_id": 11}  # expired
    (window,) = [w for req, resp in event_pairs(pop, served, "u") for w in
                 monitor.collect(req).windows + monitor.collect(resp).windows]  # fmt: skip
    assert monitor.outside_intended_use == 4 and monitor.buffered_rows == 36 - 30
    kept = [i for i in range(40) if i not in (3, 17, 18, 35)]
    names = [f.name for f in FS.features]
    expected = pop.features.iloc[[REFERENCE_ROWS + i for i in kept[:30]]]
    pd.testing.assert_frame_equal(
        window.features[names].reset_index(drop=True), expected[names].reset_index(drop=True)
    )
    assert not monitor.rejected  # left out, not rejected


def test_invalid_requests_and_responses_are_counted_by_field_never_buffered(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    monitor = _monitor(pop, testers, expected_model_version="m/1")
    good = pop.instances[REFERENCE_ROWS]
    ok = {"predictions": [{"risk": 0.1, "model_version": "m/1"}]}
    cases = [
        ({"instances": [{**good, "age": "[200-210)"}]}, ok, ("invalid_request", "age")),
        ({"instances": [{**good, "patient_name": "x"}]}, ok, ("invalid_request", "other")),
        ({"rows": []}, ok, ("invalid_request", "instances")),
        ({"instances": [good]}, {"error": "boom"}, ("invalid_response", "predictions")),
        ({"instances": [good]}, {"predictions": [{"risk": 1.5}]}, ("invalid_response", "risk")),
        ({"instances": [good, good]}, ok, ("count_mismatch", "predictions")),
        (
            {"instances": [good]},
            {"predictions": [{"risk": 0.1, "model_version": "m/2"}]},
            ("other_model", "model_version"),
        ),
    ]
    for n, (request, response, expected) in enumerate(cases):
        first = monitor.collect(_event(f"bad-{n}", "request", request)).rejections
        second = monitor.collect(_event(f"bad-{n}", "response", response)).rejections
        got = [(r.reason, r.field) for r in first + second]
        assert got == [expected], (n, got)
    assert monitor.buffered_rows == 0 and monitor.pending_events == 0
    assert sum(monitor.rejected.values()) == len(cases)
    # a client's own text never becomes a label
    assert all("patient_name" not in f for _, f in monitor.rejected)


def test_unpaired_events_are_evicted_by_age_and_by_count(
    pop: Population, testers: dict[str, DriftTester]
) -> None:
    clock = FakeClock()
    monitor = _monitor(pop, testers, max_pending=3, max_pending_seconds=60, clock=clock)
    body = {"instances": [pop.instances[REFERENCE_ROWS]]}
    for n in range(5):
        monitor.collect(_event(f"lonely-{n}", "request", body))
    assert monitor.pending_events == 3 and monitor.rejected[("unpaired", "request")] == 2
    clock.now = 61
    monitor.collect(_event("late", "response", {"predictions": [{"risk": 0.2}]}))
    assert monitor.pending_events == 1 and monitor.rejected[("unpaired", "request")] == 5
    assert list(monitor.pending) == ["late"]


# --- persistence and the registered reference -----------------------------------------------------


def _result(window_id: str, version: str, drift: bool) -> DriftResult:
    return DriftResult(
        window_id=window_id,
        window_size=1000,
        tested_at="2026-01-01T00:00:00Z",
        is_drift=drift,
        feature_drift=drift,
        score_drift=False,
        drifted_features=["age_years"] if drift else [],
        feature_p_values={"age_years": 1e-9 if drift else 0.4},
        feature_distances={"age_years": 0.3},
        score_p_value=0.5,
        score_distance=0.01,
        p_value=0.05,
        threshold=0.05 / 23,
        backend="scipy",
        model_version=version,
        feature_set_version=FS.version,
        reference_rows=20000,
        first_event_time="2026-01-01T00:00:00Z",
        last_event_time="2026-01-01T00:10:00Z",
        test_ms=40.0,
    )


def test_results_survive_a_restart(store_url: str) -> None:
    url = store_url
    store = DriftStore(url)
    assert store.latest() is None
    store.save(_result("w1", "m/1", False))
    store.save(_result("w2", "m/1", True))
    store.save(_result("w3", "m/2", False))
    store.close()
    reopened = DriftStore(url)
    assert reopened.latest() == _result("w3", "m/2", False)
    assert reopened.latest("m/1") == _result("w2", "m/1", True)
    assert reopened.count("m/1") == 2 and reopened.count() == 3
    assert reopened.latest("m/9") is None


def test_the_reference_is_loaded_from_the_registered_versions_evidence(
    pop: Population, tmp_path: Path
) -> None:
    from hospital_mlops.governance import registration

    work = tmp_path / "candidate"
    pop.model.save(work / "risk_model")
    golden = pop.features.iloc[:50][[f.name for f in FS.features]].reset_index(drop=True)
    golden["expected_risk"] = pop.model.predict_risk(golden, FS)
    path = reference_file(pop, work)

    def candidate(evidence: dict[str, Path]) -> registration.Candidate:
        return registration.Candidate(
            model_dir=work / "risk_model",
            evidence=evidence,
            params={"source": "diabetes130"},
            metrics={},
            tags={},
            gates_passed=True,
            input_example=golden.drop(columns=["expected_risk"]).head(3),
            golden=golden,
        )

    registration.log_candidate("test-drift-reference", candidate({REFERENCE_FILE: path}))
    loaded, version, baseline = reference_from_registry("test-drift-reference", "latest")
    assert baseline is None  # registered with no drift_baseline.json: the p-values decide
    assert version == "test-drift-reference/1"
    expected = read_reference(path)
    pd.testing.assert_frame_equal(loaded.features, expected.features)
    assert np.array_equal(loaded.scores, expected.scores)
    assert loaded.feature_set_version == FS.version


# --- the tiered decision: a calibrated baseline kept beside the reference -----------------------


@pytest.fixture(scope="module")
def tiered(pop: Population, tmp_path_factory: pytest.TempPathFactory) -> DriftTester:
    """A reference written as training writes it (in time order) with its baseline beside it,
    read back from disk the way the detector reads a local reference."""
    directory = tmp_path_factory.mktemp("tiered")
    path = directory / REFERENCE_FILE
    write_reference(
        path, pop.features.iloc[:REFERENCE_ROWS], pop.model, FS, REFERENCE_ROWS,
        order_by="encounter_order",
    )  # fmt: skip
    reference = read_reference(path)
    assert reference.info["order"] == "encounter_order"
    write_baseline(
        directory / BASELINE_FILE,
        calibrate_reference(reference, FS, WINDOW, false_alarm_rate=0.02),
    )
    baseline = baseline_beside(path)
    assert baseline is not None and baseline.thresholds is not None
    return DriftTester(reference, FS, "scipy", P_VALUE, "m/1", WINDOW, baseline)


def test_with_a_baseline_the_tiers_decide_and_p_values_are_only_reported(
    pop: Population, tiered: DriftTester
) -> None:
    assert tiered.baseline_note == "registered"
    rest = pop.features.iloc[REFERENCE_ROWS:].reset_index(drop=True)
    risk = pop.model.predict_risk(rest, FS)
    results = [
        tiered.test(rest.iloc[s : s + WINDOW], risk[s : s + WINDOW])
        for s in range(0, len(rest) - WINDOW + 1, WINDOW)
    ]
    assert len(results) >= 6 and all(r.decided_by == "tiers" for r in results)
    assert all(r.investigate_tier == "ran" for r in results)
    # windows like the baseline's: no act-tier alert, and at most one needless look in six
    assert not any(r.tier == "act" for r in results)
    assert sum(r.is_drift for r in results) <= 1, [r.alerts for r in results]
    # the p-value tests still run, as a secondary statistic
    assert all(len(r.feature_p_values) == len(FS.features) for r in results)

    shifted = rest.iloc[:WINDOW].assign(
        inpatient_admissions_prior_year=rest["inpatient_admissions_prior_year"].iloc[:WINDOW] + 3
    )
    moved = tiered.test(shifted, pop.model.predict_risk(shifted, FS))
    assert moved.is_drift and moved.tier == "investigate"
    assert "inpatient_admissions_prior_year" in moved.drifted_features
    alert = next(a for a in moved.alerts if a["subject"] == "inpatient_admissions_prior_year")
    assert alert["magnitude"] > alert["threshold"] >= alert["baseline_range"][1]


def test_refused_and_resent_requests_reach_the_act_tier_through_the_monitor(
    pop: Population, tiered: DriftTester
) -> None:
    monitor = DriftMonitor(tiered, pop.served, WINDOW)
    instances = [
        {**i, "encounter_token": f"tok-{n:016d}"}
        for n, i in enumerate(pop.instances[REFERENCE_ROWS : REFERENCE_ROWS + WINDOW])
    ]
    instances[:30] = instances[30:60]  # 30 encounters sent twice under the same token
    # 20 requests the endpoint refuses: a code outside the catalogued list
    refused = [{**pop.instances[0], "admission_source_id": 99} for _ in range(20)]
    for n, one in enumerate(refused):
        monitor.collect(_event(f"r-{n}", "request", {"instances": [one]}))
    windows = []
    for request, response in event_pairs(pop, instances, "dup"):
        windows += monitor.collect(request).windows
        windows += monitor.collect(response).windows
    (window,) = windows
    assert window.refused == {"admission_source_id": 20}
    result = monitor.test(window)
    rules = {a["statistic"]: a for a in result.alerts if a["tier"] == "act"}
    assert result.tier == "act" and {"requests_refused", "repeated_encounters"} <= set(rules)
    assert rules["requests_refused"]["magnitude"] == pytest.approx(20 / (WINDOW + 20), abs=1e-6)
    assert result.refused == {"admission_source_id": 20}
    # no token, field value or client text in what is stored
    stored = json.dumps(result.as_dict())
    assert "tok-" not in stored and "99" not in json.dumps(result.alerts)
    # the next window starts with no refusals
    assert monitor.window_refused == {}


def test_another_window_size_is_calibrated_again_and_a_sampled_reference_cannot_be(
    pop: Population, tiered: DriftTester, reference: DriftReference, tmp_path: Path
) -> None:
    assert tiered.baseline is not None
    smaller = DriftTester(tiered.reference, FS, "scipy", P_VALUE, "m/1", 500, tiered.baseline)
    assert smaller.baseline is not None and smaller.baseline.thresholds is not None
    assert smaller.baseline.thresholds.window == 500
    assert smaller.baseline_note.startswith("calibrated again at window 500")
    # the registry's reference of older versions is a random sample: no consecutive windows
    sampled = DriftTester(reference, FS, "scipy", P_VALUE, "m/1", 500, tiered.baseline)
    assert sampled.baseline is not None and sampled.baseline.thresholds is None
    result = sampled.test(reference.features.iloc[:500], reference.scores[:500])
    assert result.decided_by == "tiers" and result.investigate_tier.startswith("not run")
    with pytest.raises(DriftReferenceError, match="sampled drift reference"):
        calibrate_reference(reference, FS, WINDOW, false_alarm_rate=0.02)
    # a damaged baseline file is refused with its name, never half-read
    bad = tmp_path / BASELINE_FILE
    bad.write_text('{"thresholds": 1}')
    with pytest.raises(DriftReferenceError, match=r"drift_baseline\.json"):
        read_baseline(bad)


def test_results_stored_before_the_tiers_read_back() -> None:
    fields = DriftResult.__dataclass_fields__
    old = {f: None for f in list(fields)[: list(fields).index("decided_by")]}
    result = DriftResult.from_dict(old)
    assert result.decided_by == "p_value" and result.alerts == [] and result.tier is None
