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
