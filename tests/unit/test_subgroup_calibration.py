"""Calibration per subgroup on matured outcomes, against bands from the validated period.

The streams are simulated from a calibrated model (outcomes drawn with exactly the predicted
risk), and the validated (test) period is drawn the same way, so a "clean" window has a precise
meaning and a doubled event rate in one group is one controlled change to it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hospital_mlops.features import feature_set_for, served_inputs
from hospital_mlops.features.subgroups import GROUP_UNKNOWN as UNKNOWN
from hospital_mlops.monitoring.policy import load_monitoring_policy
from hospital_mlops.monitoring.report import monitoring_html
from hospital_mlops.monitoring.run import MonitoringRun, subgroup_alerts
from hospital_mlops.monitoring.subgroup_calibration import subgroup_calibration
from hospital_mlops.monitoring.subgroup_results import SubgroupCalibration
from hospital_mlops.monitoring.subgroup_settings import (
    CalibrationSettings,
    SubgroupCalibrationError,
)
from tests.html_checks import is_self_contained

RACES = ("Caucasian", "AfricanAmerican", "Hispanic")
SHARES = (0.6, 0.3, 0.1)
START = pd.Timestamp("2026-01-01", tz="UTC")  # a window start (windows align to the epoch)
WEEK = pd.Timedelta(hours=168)
HORIZON = pd.Timedelta(days=30)
LATER = pd.Timestamp("2040-01-01", tz="UTC")  # every window's outcomes have matured
# the readmission model's subgroup maps (its serving recipe's), as run_monitoring passes them
READMISSION = served_inputs(feature_set_for("diabetes130"))
POST_ACUTE = served_inputs(feature_set_for("diabetes130", "post_acute_at_admission"))
SETTINGS = CalibrationSettings(
    groups={"race": "race", "sex": "gender"},
    window_hours=168,
    outcome_horizon_days=30,
    min_outcomes=100,
    small_cell_min=11,
    calibration_bins=10,
    maps=READMISSION.recipe.subgroups if READMISSION.recipe else {},
)


def _risks(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.clip(rng.beta(1.6, 11.0, size=n), 0.005, 0.95)


def _test_period(rng: np.random.Generator, n: int = 6000) -> pd.DataFrame:
    score = _risks(rng, n)
    return pd.DataFrame(
        {
            "encounter_token": [f"enc-test-{i:06d}" for i in range(n)],
            "label": (rng.random(n) < score).astype("int64"),
            "score": score,
            "race": rng.choice(RACES, n, p=SHARES),
            "sex_male": rng.choice([0.0, 1.0, np.nan], n, p=[0.5, 0.48, 0.02]),
        }
    )


def _stream(
    rng: np.random.Generator,
    weeks: int,
    per_week: int,
    *,
    doubled_from: int | None = None,
    doubled: str = "AfricanAmerican",
) -> pd.DataFrame:
    frames = []
    for week in range(weeks):
        risk = _risks(rng, per_week)
        race = rng.choice(RACES, per_week, p=SHARES)
        truth = risk
        if doubled_from is not None and week >= doubled_from:
            truth = np.where(race == doubled, np.minimum(1.0, 2 * risk), risk)
        seconds = rng.integers(0, 7 * 86400, per_week)
        frames.append(
            pd.DataFrame(
                {
                    "scored_at": START + week * WEEK + pd.to_timedelta(seconds, unit="s"),
                    "risk": risk,
                    "alert": risk > 0.3,
                    "outcome": (rng.random(per_week) < truth).astype("float64"),
                    "race": race,
                    "sex": rng.choice(
                        np.array(["Female", "Male", None], dtype=object),
                        per_week,
                        p=[0.5, 0.48, 0.02],
                    ),
                    "encounter_token": [f"enc-live-{week}-{i:06d}" for i in range(per_week)],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def _alarmed_windows(result: SubgroupCalibration) -> int:
    return len({a.window_start for a in result.alerts})


def test_a_calibrated_stream_alarms_within_the_declared_rate() -> None:
    rng = np.random.default_rng(7)
    # windows a quarter of the test period's size: its own sampling error matters
    test_period, stream = _test_period(rng), _stream(rng, 300, 1500)
    result = subgroup_calibration(stream, test_period, SETTINGS, LATER)
    assessed = [w for w in result.windows if w.status == "run"]
    assert len(assessed) == 300
    # three races and three sexes (2% unknown: 120 test-period rows) have a band
    assert result.tests_per_window == 2 * (3 + 3)
    assert result.per_test_rate == pytest.approx(0.02 / 12)
    measured = _alarmed_windows(result)
    assert measured <= stats.binom.ppf(0.999, len(assessed), 0.02)
    # the bands follow the declared rate: a looser one alarms more, and still within it
    loose = subgroup_calibration(
        stream,
        test_period,
        CalibrationSettings(**{**vars(SETTINGS), "false_alarm_rate": 0.3}),
        LATER,
    )
    assert measured < _alarmed_windows(loose) <= stats.binom.ppf(0.999, len(assessed), 0.3)


def test_the_band_carries_the_validated_periods_own_sampling_error() -> None:
    """Windows twice the test group's size, each trial with a fresh test period, so trials are
    independent: a band centred on a finite test period's O/E without that period's own
    sampling error alarms about a third of the time at a declared 0.2."""
    settings = CalibrationSettings(
        **{**vars(SETTINGS), "groups": {"race": "race"}, "false_alarm_rate": 0.2}
    )
    rng = np.random.default_rng(29)
    trials, alarms = 300, 0
    for _ in range(trials):
        test_period = _test_period(rng, 500).assign(race="Caucasian")
        window = _stream(rng, 1, 1000).assign(race="Caucasian")
        result = subgroup_calibration(window, test_period, settings, LATER)
        assert result.tests_per_window == 2 and result.windows[0].status == "run"
        alarms += bool(result.alerts)
    assert alarms <= stats.binom.ppf(0.999, trials, 0.2)


def test_a_group_whose_event_rate_doubles_is_alerted_in_its_first_matured_window() -> None:
    rng = np.random.default_rng(11)
    test_period = _test_period(rng)
    stream = _stream(rng, 6, 1500, doubled_from=3)
    now = START + 4 * WEEK + HORIZON  # week 3 has just matured; weeks 4 and 5 have not
    result = subgroup_calibration(stream, test_period, SETTINGS, now)
    assert [w.status for w in result.windows] == ["run"] * 4 + ["pending"] * 2
    changed = _iso_week(3)
    raised = {(a.window_start, a.breakdown, a.group, a.statistic) for a in result.alerts}
    assert (changed, "race", "AfricanAmerican", "observed_to_expected_high") in raised
    assert not any(g == "AfricanAmerican" and w < changed for w, _, g, _ in raised)
    cell = next(
        c for c in result.windows[3].cells if (c.breakdown, c.group) == ("race", "AfricanAmerican")
    )
    assert cell.status == "alert" and cell.band is not None and cell.oe_ci is not None
    assert cell.band.oe_high is not None and cell.oe_ci[0] > cell.band.oe_high
    assert all(a.tier == "act" and a.kind == "calibration" for a in result.alerts)
    # the run addresses them to calibration's owner in the act tier, naming the subgroup
    policy = load_monitoring_policy()
    paged = subgroup_alerts(result, policy)
    assert len(paged) == len(result.alerts)
    assert all(a.tier == "act" and a.owner == policy.owners["calibration"] for a in paged)
    assert any("AfricanAmerican" in a.message and a.window_start == changed for a in paged)


def _iso_week(week: int) -> str:
    return (START + week * WEEK).isoformat().replace("+00:00", "Z")


def test_windows_before_the_outcome_horizon_are_pending_not_passed() -> None:
    rng = np.random.default_rng(3)
    test_period = _test_period(rng)
    stream = _stream(rng, 3, 1500)  # every outcome already in, even the newest window's
    last_end = START + 3 * WEEK
    early = subgroup_calibration(
        stream, test_period, SETTINGS, last_end + HORIZON - pd.Timedelta(1, "s")
    )
    assert [w.status for w in early.windows] == ["run", "run", "pending"]
    pending = early.windows[2]
    assert pending.cells == [] and "2026-02-21" in (pending.reason or "")
    assert pending.matures_at == "2026-02-21T00:00:00Z"
    assert not any(a.window_start == pending.start for a in early.alerts)
    matured = subgroup_calibration(stream, test_period, SETTINGS, last_end + HORIZON)
    assert [w.status for w in matured.windows] == ["run"] * 3
    assert {c.status for c in matured.windows[2].cells} <= {"pass", "alert", "suppressed"}
    # the horizon has passed but the outcomes have not come in: not run, never a pass
    late = stream.assign(
        outcome=np.where(stream["scored_at"] >= START + 2 * WEEK, np.nan, stream["outcome"])
    )
    waiting = subgroup_calibration(late, test_period, SETTINGS, LATER)
    assert [w.status for w in waiting.windows] == ["run", "run", "not_run"]
    assert waiting.windows[2].cells == [] and "outcomes" in (waiting.windows[2].reason or "")


def test_small_cells_are_listed_only_as_existing() -> None:
    rng = np.random.default_rng(5)
    stream = _stream(rng, 1, 1500)
    base = stream.iloc[0]

    def rows(race: str, n: int, events: int) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "scored_at": [base["scored_at"]] * n,
                "risk": [0.1] * n,
                "alert": [False] * n,
                "outcome": [1.0] * events + [0.0] * (n - events),
                "race": [race] * n,
                "sex": ["Female"] * n,
                "encounter_token": [f"enc-small-{race}-{i}" for i in range(n)],
            }
        )

    stream = pd.concat(
        [stream, rows("Asian", 5, 0), rows("Other", 40, 3), rows("Unlisted", 40, 0)],
        ignore_index=True,
    )
    result = subgroup_calibration(stream, _test_period(rng), SETTINGS, LATER)
    cells = {c.group: c for c in result.windows[0].cells if c.breakdown == "race"}
    for few in ("Asian", "Other"):  # 5 predictions; 40 predictions but 3 events
        assert cells[few].as_dict() == {
            "window_start": _iso_week(0),
            "breakdown": "race",
            "group": few,
            "suppressed": True,
            "status": "suppressed",
        }
    # zero events identify no one: shown, and with no test-period group, no band
    unlisted = cells["Unlisted"].as_dict()
    assert unlisted["status"] == "no_baseline" and unlisted["observed_events"] == 0
    assert unlisted["n"] == 40 and unlisted["band"] is None
    assert cells["Caucasian"].status in ("pass", "alert") and (cells["Caucasian"].n or 0) > 800


@pytest.mark.parametrize("served", [READMISSION, POST_ACUTE], ids=["readmission", "post-acute"])
def test_request_fields_and_test_period_columns_map_to_the_same_groups(served) -> None:
    """Each diabetes130 set labels its groups through its own codes, to the same labels."""
    group_map = served.group_map

    def both(field: str, sent: list[object], column: list[object]) -> tuple[list, list]:
        mapping = group_map(field)
        return (
            list(mapping.from_request(pd.Series(sent, dtype=object))),
            list(mapping.from_column(pd.Series(column, dtype=object))),
        )

    assert group_map("gender").column == "sex_male"
    sent, held = both("gender", ["Male", "Female", "Unknown/Invalid", None], [1.0, 0.0, None, None])
    assert sent == held == ["Male", "Female", UNKNOWN, UNKNOWN]
    sent, held = both("age", ["[70-80)", "[0-10)", None], [75.0, 5.0, None])
    assert sent == held == ["[70-80)", "[0-10)", UNKNOWN]
    sent, held = both(
        "admission_source_id",
        ["7", "1", "9", None],
        ["emergency_room", "referral", "other", "other"],
    )
    assert sent == held == ["emergency_room", "referral", "other", "other"]
    sent, held = both("race", ["Asian", None], ["Asian", "missing"])
    assert sent == held == ["Asian", UNKNOWN]
    # a field the recipe does not map is compared as text with a column of its own name
    assert group_map("site").column == "site"
    sent, held = both("site", ["NORTH", None], ["NORTH", None])
    assert sent == held == ["NORTH", UNKNOWN]
    # end to end: the four configured fields find their bands in the test period's columns
    rng = np.random.default_rng(13)
    n = 3000
    test_period = _test_period(rng, n).assign(
        age_years=rng.choice([65.0, 75.0], n),
        admission_source=rng.choice(["emergency_room", "referral"], n),
    )
    stream = _stream(rng, 1, 1500)
    stream["age"] = rng.choice(["[60-70)", "[70-80)"], len(stream))
    stream["admission_source"] = rng.choice(["7", "1"], len(stream))
    settings = CalibrationSettings(
        **{
            **vars(SETTINGS),
            "groups": {
                "race": "race",
                "sex": "gender",
                "age": "age",
                "admission_source": "admission_source_id",
            },
        }
    )
    result = subgroup_calibration(stream, test_period, settings, LATER)
    assert all(b.status == "run" for b in result.breakdowns)
    groups = {(c.breakdown, c.group): c.status for c in result.windows[0].cells}
    for key in [
        ("age", "[70-80)"),
        ("age", "[60-70)"),
        ("sex", "Male"),
        ("admission_source", "emergency_room"),
        ("admission_source", "referral"),
    ]:
        assert groups[key] in ("pass", "alert")


def test_bad_inputs_are_not_run_with_a_reason() -> None:
    rng = np.random.default_rng(17)
    test_period, stream = _test_period(rng), _stream(rng, 2, 1500)

    no_sex = subgroup_calibration(stream, test_period.drop(columns="sex_male"), SETTINGS, LATER)
    assert no_sex.status == "run"
    by = {b.breakdown: b for b in no_sex.breakdowns}
    assert by["sex"].status == "not_run" and "'sex_male'" in (by["sex"].reason or "")
    assert by["race"].status == "run" and no_sex.tests_per_window == 2 * 3
    assert {c.breakdown for w in no_sex.windows for c in w.cells} == {"race"}

    not_logged = subgroup_calibration(stream.drop(columns="sex"), test_period, SETTINGS, LATER)
    assert {b.breakdown: b.status for b in not_logged.breakdowns} == {
        "race": "run",
        "sex": "not_run",
    }

    for bad, why in [
        (subgroup_calibration(stream, None, SETTINGS, LATER), "no test-period predictions"),
        (
            subgroup_calibration(stream, test_period.drop(columns="label"), SETTINGS, LATER),
            "lack label",
        ),
        (subgroup_calibration(stream, test_period.assign(label=2), SETTINGS, LATER), "0/1"),
        (subgroup_calibration(stream, test_period.head(50), SETTINGS, LATER), "has a band"),
        (subgroup_calibration(stream.iloc[:0], test_period, SETTINGS, LATER), "no logged"),
        (
            subgroup_calibration(stream.drop(columns="outcome"), test_period, SETTINGS, LATER),
            "lack outcome",
        ),
    ]:
        assert bad.status == "not_run" and why in (bad.reason or ""), bad.reason
        assert bad.alerts == [] and bad.per_test_rate is None

    no_outcomes = subgroup_calibration(stream.assign(outcome=np.nan), test_period, SETTINGS, LATER)
    assert [w.status for w in no_outcomes.windows] == ["not_run", "not_run"]
    assert no_outcomes.alerts == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"false_alarm_rate": 0.7}, "false_alarm_rate 0.7"),
        ({"false_alarm_rate": 0.0}, "(0, 0.5)"),
        ({"ci_level": 1.0}, "ci_level"),
        ({"min_outcomes": 0}, "min_outcomes"),
    ],
)
def test_settings_out_of_range_are_refused(change: dict[str, float], message: str) -> None:
    with pytest.raises(
        SubgroupCalibrationError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        CalibrationSettings(**{**vars(SETTINGS), **change})


def test_the_output_is_aggregates_in_strict_json() -> None:
    rng = np.random.default_rng(19)
    test_period = _test_period(rng)
    stream = _stream(rng, 3, 1500, doubled_from=1)
    result = subgroup_calibration(stream, test_period, SETTINGS, START + 2 * WEEK + HORIZON)
    assert result.alerts  # a section with alerts and bands in it
    text = json.dumps(result.as_dict(), allow_nan=False)
    assert "enc-" not in text  # no encounter token from either side
    assert json.loads(text)["windows"][2]["status"] == "pending"


def test_the_run_and_its_report_carry_the_section() -> None:
    from tests.unit.test_monitoring import BASELINE, POLICY

    rng = np.random.default_rng(23)
    stream = _stream(rng, 3, 1500, doubled_from=1)
    # in the latest assessed window, with zero events: shown, escaped
    odd = (
        stream[stream["scored_at"] >= START + WEEK].head(40).assign(race="<b>Odd</b>", outcome=0.0)
    )
    stream = pd.concat([stream, odd], ignore_index=True)
    section = subgroup_calibration(stream, _test_period(rng), SETTINGS, START + 2 * WEEK + HORIZON)
    run = MonitoringRun(
        model=BASELINE.model,
        baseline=BASELINE,
        predictions=len(stream),
        with_outcomes=len(stream),
        windows=[],
        alerts=[],
        policy=POLICY,
        subgroup_calibration=section,
    ).as_dict()
    assert run["subgroup_calibration"] == section.as_dict()
    page = monitoring_html(run)
    assert is_self_contained(page)
    part = page.split("<h2>Calibration by subgroup (matured outcomes)</h2>")[1]
    assert "&lt;b&gt;Odd&lt;/b&gt;" in part and "<b>Odd</b>" not in page
    assert part.count('<tr class="flag">') == len(
        {(a.window_start, a.breakdown, a.group) for a in section.alerts}
    )
    assert "pending" in part and "AfricanAmerican" in part
    without = {**run, "subgroup_calibration": None}
    assert "Calibration by subgroup" not in monitoring_html(without)
