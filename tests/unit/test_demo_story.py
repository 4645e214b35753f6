"""The pieces of the demo's monitoring story: its labelled, compressed-time policies, the real
labelled encounters with the data issue's fault injected, and the sticky canary split. The
story itself runs end to end in `make demo`."""

from __future__ import annotations

import numpy as np

from hospital_mlops.cli.demo_story import DEMO_PACE, FAULT, _demo_policies, _to_candidate
from hospital_mlops.features.diabetes130_stream import labelled_instances
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.rollout.policy import load_rollout_policy

LATE_PERIOD = (81_000, 101_000)  # encounter order: the extract's last years


def test_the_demo_policies_are_the_shipped_ones_with_compressed_time(tmp_path) -> None:
    monitoring_path, rollout_path = _demo_policies(tmp_path)
    assert monitoring_path.read_text().startswith("# The demo's compressed time")
    monitoring = load_monitoring_policy(monitoring_path)  # the real validators
    shipped = load_monitoring_policy()
    assert monitoring.windows.length_hours * 3600 == DEMO_PACE.window_seconds
    assert monitoring.thresholds == shipped.thresholds  # the alerts are the real ones
    assert monitoring.owners == shipped.owners
    rollout = load_rollout_policy(rollout_path)
    assert rollout.stages.canary.steps == (50,)
    assert rollout.rollback == load_rollout_policy().rollback
    assert rollout.stages.silent.gates.ece_max is None


def test_the_fault_reaches_the_requests_and_not_the_outcomes() -> None:
    clean, y_clean = labelled_instances(LATE_PERIOD, 300, seed=5)
    faulty, y_faulty = labelled_instances(LATE_PERIOD, 300, seed=5, scenario=FAULT)
    assert [i["number_diagnoses"] for i in faulty] == [1] * 300
    assert np.median([i["number_diagnoses"] for i in clean]) >= 5
    assert (y_clean == y_faulty).all() and set(np.unique(y_clean)) <= {0, 1}
    assert 0.03 < y_clean.mean() < 0.25  # the extract's 30-day readmission rate is ~11%
    same = [{k: v for k, v in i.items() if k != "number_diagnoses"} for i in clean]
    assert same == [{k: v for k, v in i.items() if k != "number_diagnoses"} for i in faulty]


def test_the_canary_split_is_sticky_and_near_its_percentage() -> None:
    encounters = [{"encounter_token": f"demo-encounter-{i:08d}"} for i in range(4000)]
    share = np.mean([_to_candidate(e, 50) for e in encounters])
    assert 0.46 < share < 0.54
    assert [_to_candidate(e, 50) for e in encounters[:50]] == [
        _to_candidate(e, 50) for e in encounters[:50]
    ]
    assert not any(_to_candidate(e, 0) for e in encounters)
