"""A monitoring run's alerts as they leave the system: Prometheus metrics (the text format a
node-exporter textfile collector or a Pushgateway takes) and CloudEvents (JSON, one per alert)
for whatever routes alerts to their owners."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

EVENT_TYPE = "org.hospital-mlops.monitoring.alert"
LATEST = (
    "estimated_auroc",
    "auroc",
    "ece",
    "observed_to_expected",
    "alerts_per_100",
    "acknowledgement_rate",
    "override_rate",
    "score_drift_p_value",
)


def prometheus_text(run: dict[str, Any]) -> str:
    """Alert counts by kind, owner and severity; the latest window's numbers; run totals.
    A metric with no value (no outcomes yet, no feedback) is left out, never written as 0."""
    registry = CollectorRegistry()
    model = run["model"]
    alerts = Gauge(
        "hmlops_monitoring_alerts",
        "Alerts raised by the last monitoring run",
        ["model", "kind", "owner", "severity"],
        registry=registry,
    )
    counts: dict[tuple[str, str, str], int] = {}
    for a in run["alerts"]:
        key = (a["kind"], a["owner"], a["severity"])
        counts[key] = counts.get(key, 0) + 1
    for (kind, owner, severity), n in sorted(counts.items()):
        alerts.labels(model, kind, owner, severity).set(n)
    latest = Gauge(
        "hmlops_monitoring_latest_window",
        "The most recent window's metrics",
        ["model", "metric"],
        registry=registry,
    )
    if run["windows"]:
        window = run["windows"][-1]
        for name in LATEST:
            if window.get(name) is not None:
                latest.labels(model, name).set(float(window[name]))
        latest.labels(model, "data_drift").set(1.0 if window["data_drift"] else 0.0)
        latest.labels(model, "predictions").set(window["n"])
    totals = Gauge(
        "hmlops_monitoring_predictions",
        "Predictions in the run",
        ["model", "with"],
        registry=registry,
    )
    totals.labels(model, "all").set(run["predictions"])
    totals.labels(model, "outcomes").set(run["with_outcomes"])
    return generate_latest(registry).decode()


def alert_events(run: dict[str, Any], source: str = "hmlops/monitor") -> list[dict[str, Any]]:
    """One CloudEvents 1.0 structured-mode event per alert."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return [
        {
            "specversion": "1.0",
            "type": EVENT_TYPE,
            "source": source,
            "id": str(uuid.uuid4()),
            "time": now,
            "subject": run["model"],
            "datacontenttype": "application/json",
            "data": alert,
        }
        for alert in run["alerts"]
    ]
