"""The monitoring report: self-contained (air-gapped), small cells suppressed, free-text
override reasons never shown."""

from __future__ import annotations

from hospital_mlops.monitoring.alerts import alerts_for
from hospital_mlops.monitoring.report import monitoring_html
from hospital_mlops.monitoring.run import MonitoringRun
from hospital_mlops.monitoring.windows import compute_windows
from tests.html_checks import is_self_contained
from tests.unit.test_monitoring import BASELINE, POLICY, _stream
from tests.unit.test_monitoring_workflow import NOW, _responses


def _run(stream, responses=None) -> dict:
    windows = compute_windows(stream, BASELINE, POLICY, responses=responses, now=NOW)
    return MonitoringRun(
        model=BASELINE.model,
        baseline=BASELINE,
        predictions=len(stream),
        with_outcomes=int(stream["outcome"].notna().sum()),
        windows=windows,
        alerts=alerts_for(windows, BASELINE, POLICY),
        policy=POLICY,
    ).as_dict()


def test_the_report_is_self_contained_with_its_plots_and_alerts() -> None:
    stream = _stream(3, 3000, 21, outcome_scale=1.6)
    reasons = (POLICY.feedback.override_reasons[0], "Mrs Smith in bed 4 said no")
    page = monitoring_html(_run(stream, _responses(stream, 5, overridden=0.7, reasons=reasons)))
    assert is_self_contained(page)
    assert page.count("<svg") == 5  # drift, performance, calibration, burden, workflow
    assert "calibration" in page and "clinical-operations" in page  # alerts with owners
    assert POLICY.feedback.override_reasons[0] in page
    assert "Mrs Smith" not in page and "not a configured reason" in page


def test_counts_below_eleven_are_suppressed() -> None:
    stream = _stream(1, 9, 22)  # a window of nine predictions
    page = monitoring_html(_run(stream))
    windows_table = page.split("<h2>Windows</h2>")[1].split("<h2>")[0]
    assert "<td>&lt;11</td>" in windows_table  # the window's nine predictions
    assert "<td>9</td>" not in windows_table


def test_an_empty_log_still_renders() -> None:
    page = monitoring_html(_run(_stream(1, 0, 23)))
    assert "No alerts." in page and "<svg" not in page


def test_windows_are_labelled_at_their_resolution_and_never_alike() -> None:
    from hospital_mlops.monitoring.report import window_labels

    weekly = [{"start": f"2026-11-{d:02d}T00:00:00Z"} for d in (2, 9, 16)]
    assert window_labels(weekly, 168) == ["2026-11-02", "2026-11-09", "2026-11-16"]
    six_hourly = [{"start": f"2026-11-02T{h:02d}:00:00Z"} for h in (0, 6, 12, 18)]
    labels = window_labels(six_hourly, 6)
    assert labels == ["2026-11-02 00:00", "2026-11-02 06:00", "2026-11-02 12:00",
                      "2026-11-02 18:00"]  # fmt: skip
    # days that do not start at midnight keep their time
    shifted = [{"start": "2026-11-02T07:00:00Z"}, {"start": "2026-11-03T07:00:00Z"}]
    assert window_labels(shifted, 24) == ["2026-11-02 07:00", "2026-11-03 07:00"]


def test_the_report_uses_the_labels_in_its_table_and_its_calibration_legend() -> None:
    stream = _stream(3, 3000, 21, outcome_scale=1.6)
    run = _run(stream)
    run["policy"]["window_hours"] = 6  # read as six-hour windows: each start keeps its time
    page = monitoring_html(run)
    table = page.split("<h2>Windows</h2>")[1].split("<h2>")[0]
    starts = [w["start"][:10] + " " + w["start"][11:16] for w in run["windows"]]
    for start in starts:
        assert f"<td>{start} → " in table
    calibration = page.split("<h3>Calibration per window")[1].split("</svg>")[0]
    with_outcomes = [
        start
        for start, w in zip(starts, run["windows"], strict=True)
        if any("observed_rate" in b for b in w["calibration"])
    ]
    assert with_outcomes and all(f">{start}<" in calibration for start in with_outcomes)


def test_drift_is_plotted_as_a_size_against_its_threshold_not_a_p_value() -> None:
    stream = _stream(3, 3000, 21, outcome_scale=1.6)
    run = _run(stream)
    for w in run["windows"]:
        assert 0 <= w["score_drift_distance"] <= 1
        assert 0 < w["score_drift_distance_threshold"] < 1
    page = monitoring_html(run)
    drift = page.split("<h3>Drift over time</h3>")[1].split("</svg>")[0]
    assert "KS distance" in drift and "× threshold" in drift
    assert "p-value" not in drift and "log" not in drift.split("<title>")[1].split("</title>")[0]
    # every plot is named for a screen reader
    assert page.count('role="img" aria-label="') == page.count("<svg") == 5
