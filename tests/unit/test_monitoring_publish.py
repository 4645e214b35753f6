"""Alerts leave as Prometheus metrics and CloudEvents."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from hospital_mlops.monitoring.publish import EVENT_TYPE, alert_events, prometheus_text
from tests.unit.test_monitoring import _stream
from tests.unit.test_monitoring_report import _run


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_alert_counts_and_the_latest_window_are_metrics() -> None:
    run = _run(_stream(3, 3000, 31, outcome_scale=1.6))
    samples = _samples(prometheus_text(run))
    model = run["model"]
    critical = [a for a in run["alerts"] if a["kind"] == "calibration"]
    key = (
        "hmlops_monitoring_alerts",
        (("kind", "calibration"), ("model", model), ("owner", "ml"), ("severity", "critical")),
    )
    assert critical and samples[key] == len(critical)
    latest = run["windows"][-1]
    auroc = ("hmlops_monitoring_latest_window", (("metric", "auroc"), ("model", model)))
    assert samples[auroc] == latest["auroc"]
    # no feedback recorded: the override rate is absent, not a 0 a dashboard would believe
    assert not any(dict(labels).get("metric") == "override_rate" for _, labels in samples)


def test_each_alert_is_a_cloudevent() -> None:
    run = _run(_stream(2, 3000, 32, risk_shift=0.12))
    events = alert_events(run)
    assert len(events) == len(run["alerts"]) > 0
    assert {e["type"] for e in events} == {EVENT_TYPE}
    assert len({e["id"] for e in events}) == len(events)
    assert [e["data"] for e in events] == run["alerts"]
    assert all(e["specversion"] == "1.0" and e["subject"] == run["model"] for e in events)
