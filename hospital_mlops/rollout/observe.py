"""What a rollout stage observed: the candidate's service metrics, its logged predictions and
their outcomes and feedback, its agreement with the champion, and the monitoring alerts raised
on it, since the stage began.

The numbers come from where they are kept:

* latency and error rate: the predictors' Prometheus ``/metrics`` (``hmlops_prediction_*``,
  see ``serving/metrics.py``), summed over pods, as the difference from the scrape taken when
  the stage began (a counter that went down means a restarted pod: its counts start over); or a
  JSON file of numbers a platform team took from its own Prometheus;
* predictions, outcomes, feedback: the prediction log (the shadow's own, for shadow and silent);
* agreement: the candidate's and the champion's answers to the same request, paired by the
  request id the inference logger shares between them (``ce-id``) and the encounter token;
* alerts: the monitoring windows computed on the candidate's predictions of the stage.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from hospital_mlops.inference.prediction_log import PredictionLog, predictions
from hospital_mlops.model.evaluate import weighted
from hospital_mlops.monitoring.alerts import Alert
from hospital_mlops.monitoring.policy import MonitoringPolicy
from hospital_mlops.monitoring.windows import Baseline
from hospital_mlops.rollout.gates import Observations

REQUESTS = "hmlops_prediction_requests"
LATENCY = "hmlops_prediction_seconds"
OUTCOMES = ("ok", "invalid", "error")


class ObservationError(ValueError):
    """A source of observations could not be read; the message names it."""


@dataclass(frozen=True)
class ServiceSnapshot:
    """Cumulative request counts and latency buckets of one model version (all pods)."""

    counts: dict[str, float]  # ok / invalid / error
    buckets: dict[str, float]  # cumulative count per upper bound ("0.005", …, "+Inf")

    def as_dict(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "buckets": dict(self.buckets)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ServiceSnapshot:
        return cls(
            {k: float(v) for k, v in raw["counts"].items()},
            {k: float(v) for k, v in raw["buckets"].items()},
        )

    def since(self, start: ServiceSnapshot | None) -> ServiceSnapshot:
        """What happened after ``start``. A series that went down was reset (a pod restarted,
        or a canary revision replaced it): its current value is all there is, as in
        Prometheus' ``increase()``."""
        if start is None:
            return self

        def minus(now: dict[str, float], then: dict[str, float]) -> dict[str, float]:
            if any(now.get(k, 0.0) < v for k, v in then.items()):
                return dict(now)
            return {k: v - then.get(k, 0.0) for k, v in now.items()}

        return ServiceSnapshot(minus(self.counts, start.counts), minus(self.buckets, start.buckets))

    @property
    def answered(self) -> float:
        return self.counts.get("ok", 0.0)

    @property
    def error_rate(self) -> float | None:
        """Server errors among the requests the service had to answer; a 400 is the caller's
        input, not the model's failure, and is not counted."""
        total = self.counts.get("ok", 0.0) + self.counts.get("error", 0.0)
        return self.counts.get("error", 0.0) / total if total else None

    def latency_quantile_ms(self, q: float) -> float | None:
        """Prometheus' ``histogram_quantile``: linear within the bucket the rank falls in; the
        highest finite bound when it falls in +Inf."""
        bounds = sorted(
            ((math.inf if k == "+Inf" else float(k)), v) for k, v in self.buckets.items()
        )
        if not bounds or bounds[-1][1] <= 0:
            return None
        rank = q * bounds[-1][1]
        lower_bound, lower_count = 0.0, 0.0
        for bound, count in bounds:
            if count >= rank:
                if math.isinf(bound):
                    return 1000 * lower_bound
                if count == lower_count:
                    return 1000 * bound
                share = (rank - lower_count) / (count - lower_count)
                return 1000 * (lower_bound + (bound - lower_bound) * share)
            lower_bound, lower_count = bound, count
        return 1000 * lower_bound


def parse_service_metrics(texts: list[str], model: str, version: int) -> ServiceSnapshot:
    """Sum the ``hmlops_prediction_*`` series of ``model`` ``version`` over scrapes (pods)."""
    counts = dict.fromkeys(OUTCOMES, 0.0)
    buckets: dict[str, float] = {}
    want = {"model": model, "version": str(version)}
    for text in texts:
        try:
            families = list(text_string_to_metric_families(text))
        except ValueError as exc:
            raise ObservationError(f"not Prometheus text format: {exc}") from None
        for family in families:
            for sample in family.samples:
                labels = sample.labels
                if any(labels.get(k) != v for k, v in want.items()):
                    continue
                if sample.name == f"{REQUESTS}_total" and labels.get("outcome") in counts:
                    counts[labels["outcome"]] += sample.value
                elif sample.name == f"{LATENCY}_bucket":
                    le = labels["le"]
                    key = "+Inf" if le == "+Inf" else repr(float(le))
                    buckets[key] = buckets.get(key, 0.0) + sample.value
    return ServiceSnapshot(counts, buckets)


def scrape(urls: list[str], timeout: float = 10.0) -> list[str]:
    import httpx

    texts = []
    for url in urls:
        try:
            answer = httpx.get(url, timeout=timeout)
            answer.raise_for_status()
        except httpx.HTTPError as exc:
            raise ObservationError(f"metrics {url}: {type(exc).__name__}: {exc}") from None
        texts.append(answer.text)
    return texts


def read_observations_file(path: Path) -> dict[str, float]:
    """``{"latency_p99_ms": …, "error_rate": …}`` from a team's own Prometheus queries."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ObservationError(f"observations file {path}: {exc}") from None
    allowed = {"latency_p99_ms": (0.0, math.inf), "error_rate": (0.0, 1.0)}
    if not isinstance(raw, dict) or not raw or set(raw) - set(allowed):
        raise ObservationError(
            f"observations file {path}: must be a JSON object with any of {sorted(allowed)}"
        )
    out = {}
    for key, value in raw.items():
        low, high = allowed[key]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not low <= value <= high
        ):
            raise ObservationError(
                f"observations file {path}: {key} {value!r} must be a number in [{low}, {high}]"
            )
        out[key] = float(value)
    return out


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True, format="ISO8601")


def outcomes_of(log: PredictionLog, tokens: list[str], chunk: int = 900) -> pd.Series:
    """``readmitted_30d`` (1.0 / 0.0) by encounter token, for the tokens that have one."""
    from hospital_mlops.monitoring.outcomes import outcomes_table

    o = outcomes_table(log)
    known: dict[str, float] = {}
    with log.engine.connect() as conn:
        for start in range(0, len(tokens), chunk):
            part = tokens[start : start + chunk]
            rows = conn.execute(
                sa.select(o.c.encounter_token, o.c.readmitted_30d).where(
                    o.c.encounter_token.in_(part)
                )
            ).all()
            known.update((token, float(bool(value))) for token, value in rows)
    return pd.Series(known, dtype="float64")


def stage_predictions(
    log: PredictionLog,
    model: str,
    version: int,
    since: datetime,
    until: datetime,
    outcomes_log: PredictionLog | None = None,
) -> pd.DataFrame:
    """The version's logged predictions scored in [since, until]: ``request_id``,
    ``encounter_token``, ``scored_at``, ``risk``, ``alert``, ``outcome`` (NaN until known).
    Outcomes are ingested where the champion's predictions are logged (``outcomes_log``): a
    shadow's own log holds no outcomes, its encounters are the champion's."""
    p = predictions
    query = sa.select(
        p.c.request_id, p.c.encounter_token, p.c.scored_at, p.c.risk, p.c.alert
    ).where(p.c.model_name == model, p.c.model_version == version, p.c.risk.is_not(None))
    columns = ["request_id", "encounter_token", "scored_at", "risk", "alert"]
    with log.engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=columns)
    frame["scored_at"] = _utc(frame["scored_at"])
    frame = frame[(frame["scored_at"] >= since) & (frame["scored_at"] <= until)]
    tokens = sorted({t for t in frame["encounter_token"] if isinstance(t, str)})
    outcomes = outcomes_of(outcomes_log or log, tokens)
    frame = frame.assign(
        risk=frame["risk"].astype("float64"),
        alert=frame["alert"].astype(bool),
        outcome=frame["encounter_token"].map(outcomes).astype("float64"),
    )
    return frame.reset_index(drop=True)


def agreement(candidate: pd.DataFrame, champion: pd.DataFrame) -> tuple[float | None, int]:
    """Share of paired predictions with the same alert decision, and the number of pairs. A
    pair is the same request (``request_id``) about the same encounter; requests that cannot
    be paired one-to-one are left out rather than guessed."""

    def keyed(frame: pd.DataFrame) -> pd.Series:
        key = frame["request_id"].astype(str) + "|" + frame["encounter_token"].fillna("")
        alerts = pd.Series(frame["alert"].to_numpy(), index=key.to_numpy())
        return alerts[~alerts.index.duplicated(keep=False)]

    ours, theirs = keyed(candidate), keyed(champion)
    common = ours.index.intersection(theirs.index)
    if len(common) == 0:
        return None, 0
    same = ours.loc[common].to_numpy() == theirs.loc[common].to_numpy()
    return float(same.mean()), len(common)


def pooled_ece(frame: pd.DataFrame, policy: MonitoringPolicy) -> float | None:
    known = frame["outcome"].notna().to_numpy()
    y = frame["outcome"].to_numpy(dtype="float64")[known]
    if len(y) < policy.windows.min_outcomes or not 0 < y.sum() < len(y):
        return None
    risk = frame["risk"].to_numpy(dtype="float64")[known]
    bins = weighted.quantile_bins(risk, policy.thresholds.calibration_bins)
    return float(weighted.ece(y, risk, bins, np.ones((1, len(y))))[0])


def override_rate(responses: pd.DataFrame | None) -> float | None:
    if responses is None or responses.empty:
        return None
    answered = responses["response"].dropna()
    return float((answered == "overridden").mean()) if len(answered) else None


def observations(
    *,
    hours: float,
    frame: pd.DataFrame,
    baseline: Baseline,
    policy: MonitoringPolicy,
    alerts: list[Alert],
    service: ServiceSnapshot | None,
    service_override: dict[str, float] | None = None,
    agreement_with_champion: float | None = None,
    responses: pd.DataFrame | None = None,
) -> Observations:
    """The stage's numbers as the gates read them. Anything not measured stays ``None``."""
    latency = error_rate = None
    if service is not None and service.answered:
        latency = service.latency_quantile_ms(0.99)
        error_rate = service.error_rate
    if service_override:
        latency = service_override.get("latency_p99_ms", latency)
        error_rate = service_override.get("error_rate", error_rate)
    change = None
    if len(frame) and baseline.alerts_per_100:
        change = 100 * float(frame["alert"].mean()) / baseline.alerts_per_100 - 1
    return Observations(
        hours=round(hours, 3),
        predictions=len(frame),
        latency_p99_ms=None if latency is None else round(latency, 3),
        error_rate=None if error_rate is None else round(error_rate, 6),
        agreement_with_champion=(
            None if agreement_with_champion is None else round(agreement_with_champion, 6)
        ),
        ece=None if (ece := pooled_ece(frame, policy)) is None else round(ece, 6),
        alerts_per_100_change=None if change is None else round(change, 6),
        override_rate=override_rate(responses),
        alerts=tuple(sorted({(a.kind, a.severity) for a in alerts})),
    )
