"""Prometheus metrics the rollout gates read: requests by outcome and their latency, labelled
with the registered model and version a pod serves.

KServe's own ``request_predict_seconds`` has no version label and no error count; a canary's
gates need both (the latest revision's version against the last one at 100%). Exposed on the
ModelServer's ``/metrics`` next to KServe's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

# Fine below 50 ms, where the latency gates sit; coarse above, where only the rollback limit is.
LATENCY_BUCKETS = (
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
)
REQUESTS = Counter(
    "hmlops_prediction_requests",
    "Prediction requests by outcome: ok, invalid (a 400: the caller's input) or error (a 5xx)",
    ["model", "version", "outcome"],
)
LATENCY = Histogram(
    "hmlops_prediction_seconds",
    "Time to answer a prediction request that was answered (validation to logged answer)",
    ["model", "version"],
    buckets=LATENCY_BUCKETS,
)


class RequestMetrics:
    """The series of one served version, bound once so a request pays ~1 µs."""

    def __init__(self, model: str, version: int) -> None:
        labels = {"model": model, "version": str(version)}
        self._ok = REQUESTS.labels(outcome="ok", **labels)
        self._invalid = REQUESTS.labels(outcome="invalid", **labels)
        self._error = REQUESTS.labels(outcome="error", **labels)
        self._latency = LATENCY.labels(**labels)

    def answered(self, seconds: float) -> None:
        self._ok.inc()
        self._latency.observe(seconds)

    def invalid(self) -> None:
        self._invalid.inc()

    def failed(self) -> None:
        self._error.inc()


class Losses:
    """What a served version answered but could not record or pass on, read live at each
    scrape: rows the prediction-log database refused (full, read-only, gone) and
    inference-logger events the drift detector never received. Both are counted, never
    silently dropped, and alerted on (kustomize/alerts/alerts.yaml)."""

    def __init__(self) -> None:
        self._sources: list[tuple[dict[str, str], Callable[[], tuple[int, int, int]]]] = []

    def watch(self, model: str, version: int, read: Callable[[], tuple[int, int, int]]) -> None:
        """``read`` returns (log rows lost, events failed, events dropped)."""
        self._sources.append(({"model": model, "version": str(version)}, read))

    def unwatch(self, read: Callable[[], tuple[int, int, int]]) -> None:
        self._sources = [(labels, r) for labels, r in self._sources if r != read]

    def describe(self) -> list[Metric]:
        return []  # collected only when a predictor is watched

    def collect(self) -> Iterator[Metric]:
        lost = CounterMetricFamily(
            "hmlops_prediction_log_rows_lost",
            "Answered predictions the prediction log could not keep (database refused them)",
            labels=["model", "version"],
        )
        undelivered = CounterMetricFamily(
            "hmlops_inference_events_undelivered",
            "Inference-logger events not delivered to the drift detector, by reason",
            labels=["model", "version", "reason"],
        )
        for labels, read in self._sources:
            rows, failed, dropped = read()
            lost.add_metric([labels["model"], labels["version"]], rows)
            for reason, n in (("failed", failed), ("dropped", dropped)):
                undelivered.add_metric([labels["model"], labels["version"], reason], n)
        yield lost
        yield undelivered


LOSSES = Losses()
REGISTRY.register(LOSSES)
