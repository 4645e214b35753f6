"""Per-window metrics against the baseline of the last validated period, and the alerts they
raise. Pure: frames and arrays in, dataclasses out.

Until outcomes arrive, performance is *estimated* from the calibrated risks themselves
(confidence-based performance estimation, as NannyML's CBPE does): each prediction counts as a
case with probability ``risk``. That estimate is only as good as the calibration, so it is
always labelled an estimate and shown beside the realized numbers once they exist.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hospital_mlops.evaluate import weighted
from hospital_mlops.monitoring.auroc_bootstrap import auroc_with_ci
from hospital_mlops.monitoring.policy import AlertKind, MonitoringPolicy


@dataclass(frozen=True)
class Baseline:
    """The last validated period: the registered version's test-period evaluation."""

    model: str
    auroc: float
    ece: float
    observed_to_expected: float
    alerts_per_100: float
    event_rate: float
    scores: np.ndarray = field(repr=False)  # the risks it gave the validated (test) period

    @classmethod
    def from_evidence(
        cls, model: str, evaluation: dict[str, Any], reference_scores: np.ndarray
    ) -> Baseline:
        primary = evaluation["primary_threshold"]
        return cls(
            model=model,
            auroc=float(evaluation["discrimination"]["auroc"]["value"]),
            ece=float(evaluation["calibration"]["ece"]["value"]),
            observed_to_expected=float(evaluation["calibration"]["observed_to_expected"]["value"]),
            alerts_per_100=float(evaluation["thresholds"][primary]["alerts_per_100"]["value"]),
            event_rate=float(evaluation["event_rate"]),
            scores=np.asarray(reference_scores, dtype="float64"),
        )


@dataclass(frozen=True)
class DriftSummary:
    """The drift detector's results for one window's time span."""

    tests: int
    drifted_tests: int
    drifted_features: list[str]


@dataclass(frozen=True)
class Window:
    start: str
    end: str
    n: int
    n_outcomes: int
    data_drift: bool | None  # None: no detector result in this window
    drifted_features: list[str]
    score_drift: bool
    score_drift_p_value: float
    auroc: float | None  # realized, once enough outcomes have arrived
    auroc_ci: list[float] | None
    ece: float | None
    observed_to_expected: float | None
    estimated_auroc: float  # from the calibrated risks (CBPE); an estimate, always
    expected_event_rate: float
    observed_event_rate: float | None
    alerts_per_100: float
    # Workflow, over the window's alerts whose feedback window has closed ("judged"):
    alerts_issued: int
    pending: int  # alerts still inside their feedback window: neither answered nor ignored yet
    ignored: int  # no response within the feedback window (derived, never recorded)
    acknowledgement_rate: float | None  # responded / judged; None when nothing is judged
    override_rate: float | None  # overridden / responded; None without responses
    override_reasons: dict[str, int]
    median_minutes_to_response: float | None
    judged_alerts: int
    calibration: list[dict[str, float]]  # per equal-mass risk band: expected vs observed rate
    assessable: bool  # enough predictions for alerts

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    owner: str
    severity: str  # "warning" | "critical"
    message: str
    window_start: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(t: pd.Timestamp | datetime) -> str:
    return pd.Timestamp(t).tz_convert(UTC).isoformat().replace("+00:00", "Z")


def window_starts(scored_at: pd.Series, length: timedelta) -> pd.Series:
    """Windows aligned to the epoch, so the same prediction always falls in the same window
    whatever else is in the log."""
    epoch = pd.Timestamp(0, tz=UTC)
    step = pd.Timedelta(length)
    return epoch + ((scored_at - epoch) // step) * step


def sorted_groups(keys: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each distinct key (ascending) with the positions of its rows, in their order: one sort
    for all the groups instead of a boolean mask per group."""
    if len(keys) == 0:
        return
    keys = np.asarray(keys)
    # small keys sort by radix in linear time; a window × group key is small
    small = keys.min() >= 0 and keys.max() < 2**16
    order = np.argsort(keys.astype(np.uint16) if small else keys, kind="stable")
    ordered = keys[order]
    bounds = np.flatnonzero(ordered[1:] != ordered[:-1]) + 1
    for rows in np.split(order, bounds):
        yield int(keys[rows[0]]), rows


def estimated_auroc(risk: np.ndarray) -> float:
    """AUROC expected if each prediction is a case with probability ``risk`` (calibrated risks):
    Σ over pairs of P(i case) P(j not) 1[risk_i > risk_j] (ties half), over the expected number
    of case/non-case pairs. O(n log n)."""
    p = np.asarray(risk, dtype="float64")
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    _, first = np.unique(p_sorted, return_index=True)
    pos = np.add.reduceat(p_sorted, first)  # expected cases per distinct risk
    neg = np.add.reduceat(1.0 - p_sorted, first)
    both = np.add.reduceat(p_sorted * (1.0 - p_sorted), first)  # a row paired with itself
    neg_below = np.cumsum(neg) - neg
    # ties: half of each other pair within a group (a row's own pair excluded)
    favourable = (pos * neg_below).sum() + 0.5 * (pos * neg - both).sum()
    pairs = p.sum() * (1.0 - p).sum() - (p * (1.0 - p)).sum()
    return float(favourable / pairs) if pairs > 0 else float("nan")


def _calibration(y: np.ndarray | None, risk: np.ndarray, bins: int) -> list[dict[str, float]]:
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, bins + 1)))
    band = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, max(len(edges) - 2, 0))
    out = []
    for b in np.unique(band):
        member = band == b
        row = {
            "risk_from": round(float(risk[member].min()), 6),
            "risk_to": round(float(risk[member].max()), 6),
            "n": int(member.sum()),
            "expected_rate": round(float(risk[member].mean()), 6),
        }
        if y is not None:
            row["observed_rate"] = round(float(y[member].mean()), 6)
        out.append(row)
    return out


def _drift_in(results: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> DriftSummary | None:
    if results.empty:
        return None
    inside = results[(results["tested_at"] >= start) & (results["tested_at"] < end)]
    if inside.empty:
        return None
    drifted = inside[inside["is_drift"]]
    features = sorted({f for fs in drifted["drifted_features"] for f in fs})
    return DriftSummary(len(inside), len(drifted), features)


@dataclass(frozen=True)
class Workflow:
    alerts_issued: int
    pending: int
    ignored: int
    acknowledgement_rate: float | None
    override_rate: float | None
    override_reasons: dict[str, int]
    median_minutes_to_response: float | None
    judged: int


OTHER_REASON = "other (not a configured reason)"


def workflow_of(
    alerts: pd.DataFrame,
    feedback_window: timedelta,
    now: datetime,
    configured_reasons: tuple[str, ...] = (),
) -> Workflow:
    """``alerts``: the window's alerted predictions with ``scored_at``, ``response``,
    ``override_reason``, ``responded_at``. A response after the feedback window counts as
    ignored (the alert did its job late or not at all); an alert still inside its window is
    pending, not ignored. Reasons outside ``configured_reasons`` are counted as one "other",
    never named: free text could carry a patient's details into alerts and reports."""
    closes = alerts["scored_at"] + pd.Timedelta(feedback_window)
    responded_at = alerts["responded_at"]
    in_time = alerts["response"].notna() & (responded_at <= closes)
    closed = closes <= pd.Timestamp(now)
    pending = int((~in_time & ~closed).sum())
    ignored = int((~in_time & closed).sum())
    responded = alerts[in_time]
    judged = len(responded) + ignored
    overridden = responded[responded["response"] == "overridden"]
    minutes = (responded["responded_at"] - responded["scored_at"]).dt.total_seconds() / 60
    named = overridden["override_reason"].where(
        overridden["override_reason"].isin(configured_reasons), OTHER_REASON
    )
    reasons = named.value_counts().sort_index()
    return Workflow(
        alerts_issued=len(alerts),
        pending=pending,
        ignored=ignored,
        acknowledgement_rate=round(len(responded) / judged, 6) if judged else None,
        override_rate=round(len(overridden) / len(responded), 6) if len(responded) else None,
        override_reasons={str(k): int(v) for k, v in reasons.items()},
        median_minutes_to_response=round(float(minutes.median()), 2) if len(responded) else None,
        judged=judged,
    )


_NO_RESPONSES = pd.DataFrame(
    {
        "scored_at": pd.Series(dtype="datetime64[ns, UTC]"),
        "response": pd.Series(dtype="object"),
        "override_reason": pd.Series(dtype="object"),
        "responded_at": pd.Series(dtype="datetime64[ns, UTC]"),
    }
)


def compute_windows(
    predictions: pd.DataFrame,
    baseline: Baseline,
    policy: MonitoringPolicy,
    drift_results: pd.DataFrame | None = None,
    responses: pd.DataFrame | None = None,
    now: datetime | None = None,
) -> list[Window]:
    """``predictions``: one row per logged prediction with ``scored_at`` (UTC), ``risk``,
    ``alert`` and ``outcome`` (1.0 / 0.0, NaN until known). ``drift_results``: the detector's
    ``tested_at`` (UTC), ``is_drift``, ``drifted_features``. ``responses``: one row per alerted
    prediction with ``scored_at`` and its ``response``, ``override_reason``, ``responded_at``
    (missing when none); without it, no workflow numbers are reported (never zeros)."""
    if predictions.empty:
        return []
    length = timedelta(hours=policy.windows.length_hours)
    now = now or datetime.now(UTC)
    feedback_window = timedelta(hours=policy.windows.feedback_hours)
    starts = window_starts(predictions["scored_at"], length)
    drift = drift_results if drift_results is not None else pd.DataFrame()
    answered = responses if responses is not None else _NO_RESPONSES
    answered_starts = window_starts(answered["scored_at"], length)
    window, window_start = pd.factorize(starts, sort=True)
    risk_all = predictions["risk"].to_numpy(dtype="float64")
    alert_all = predictions["alert"].to_numpy(dtype=bool)
    outcome_all = predictions["outcome"].to_numpy(dtype="float64")

    def one(key: int, rows: np.ndarray) -> Window:
        start = pd.Timestamp(window_start[key])
        end = start + pd.Timedelta(length)
        risk = risk_all[rows]
        alerted = alert_all[rows]
        outcome = outcome_all[rows]
        known = ~np.isnan(outcome)
        y = outcome[known]
        with_outcomes = int(known.sum())
        realized = with_outcomes >= policy.windows.min_outcomes and 0 < y.sum() < len(y)
        b = policy.bootstrap
        auroc, ci = (
            auroc_with_ci(y, risk[known], b.replicates, b.seed, b.ci_level)
            if realized
            else (None, None)
        )
        ece = observed_to_expected = None
        if realized:
            bins = weighted.quantile_bins(risk[known], policy.thresholds.calibration_bins)
            ece = float(weighted.ece(y, risk[known], bins, np.ones((1, len(y))))[0])
            observed_to_expected = float(y.mean() / risk[known].mean())
        ks = stats.ks_2samp(risk, baseline.scores)
        summary = _drift_in(drift, start, end)
        work = (
            workflow_of(
                answered[answered_starts == start],
                feedback_window,
                now,
                policy.feedback.override_reasons,
            )
            if responses is not None
            else None
        )
        return Window(
            start=_iso(start),
            end=_iso(end),
            n=len(rows),
            n_outcomes=with_outcomes,
            data_drift=None if summary is None else summary.drifted_tests > 0,
            drifted_features=[] if summary is None else summary.drifted_features,
            score_drift=bool(ks.pvalue < policy.thresholds.score_drift_p_value),
            score_drift_p_value=float(ks.pvalue),
            auroc=None if auroc is None else round(auroc, 6),
            auroc_ci=ci,
            ece=None if ece is None else round(ece, 6),
            observed_to_expected=(
                None if observed_to_expected is None else round(observed_to_expected, 6)
            ),
            estimated_auroc=round(estimated_auroc(risk), 6),
            expected_event_rate=round(float(risk.mean()), 6),
            observed_event_rate=round(float(y.mean()), 6) if realized else None,
            alerts_per_100=round(100 * float(alerted.mean()), 4),
            alerts_issued=int(alerted.sum()),
            pending=work.pending if work else 0,
            ignored=work.ignored if work else 0,
            acknowledgement_rate=work.acknowledgement_rate if work else None,
            override_rate=work.override_rate if work else None,
            override_reasons=work.override_reasons if work else {},
            median_minutes_to_response=work.median_minutes_to_response if work else None,
            judged_alerts=work.judged if work else 0,
            # with outcomes: expected vs observed among the predictions that have them
            calibration=_calibration(y, risk[known], policy.thresholds.calibration_bins)
            if realized
            else _calibration(None, risk, policy.thresholds.calibration_bins),
            assessable=len(rows) >= policy.windows.min_predictions,
        )

    groups = [(key, rows) for key, rows in sorted_groups(window) if key >= 0]  # not NaT
    # a window is sorts, draws and reductions in numpy, which leave the GIL: windows share the
    # cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda group: one(*group), groups))


def alerts_for(windows: list[Window], baseline: Baseline, policy: MonitoringPolicy) -> list[Alert]:
    """Each threshold crossed in an assessable window, addressed to the kind's owner."""
    t = policy.thresholds
    out: list[Alert] = []

    def raise_(kind: AlertKind, severity: str, message: str, w: Window) -> None:
        out.append(Alert(kind, policy.owners[kind], severity, message, w.start))

    for w in windows:
        if not w.assessable:
            continue
        when = f"window {w.start}–{w.end} ({w.n} predictions)"
        if w.data_drift:
            features = ", ".join(w.drifted_features[:5]) or "the inputs"
            raise_("data_drift", "warning", f"{when}: input drift detected in {features}", w)
        if w.score_drift:
            raise_(
                "score_drift",
                "warning",
                f"{when}: the risk distribution differs from the reference "
                f"(KS p = {w.score_drift_p_value:.2g} < {t.score_drift_p_value})",
                w,
            )
        floor = baseline.auroc - t.auroc_drop
        # realized: below the floor, and the whole CI below the baseline (not a noisy week)
        if (
            w.auroc is not None
            and w.auroc_ci
            and w.auroc < floor
            and w.auroc_ci[1] < baseline.auroc
        ):
            raise_(
                "performance",
                "critical",
                f"{when}: AUROC {w.auroc:.3f} (CI {w.auroc_ci}) below the baseline "
                f"{baseline.auroc:.3f} − {t.auroc_drop}",
                w,
            )
        elif w.auroc is None and w.estimated_auroc < floor:  # no outcomes yet: the estimate
            raise_(
                "performance",
                "warning",
                f"{when}: estimated AUROC {w.estimated_auroc:.3f} (from the risks; outcomes "
                f"not yet in) below the baseline {baseline.auroc:.3f} − {t.auroc_drop}",
                w,
            )
        low, high = t.observed_to_expected
        if w.ece is not None and w.ece > t.ece_max:
            raise_("calibration", "critical", f"{when}: ECE {w.ece:.3f} > {t.ece_max}", w)
        if w.observed_to_expected is not None and not low <= w.observed_to_expected <= high:
            raise_(
                "calibration",
                "critical",
                f"{when}: observed/expected events {w.observed_to_expected:.2f} outside "
                f"[{low}, {high}]",
                w,
            )
        change = w.alerts_per_100 / baseline.alerts_per_100 - 1 if baseline.alerts_per_100 else 0
        if abs(change) > t.alerts_per_100_change:
            raise_(
                "alert_burden",
                "warning",
                f"{when}: {w.alerts_per_100:.1f} alerts per 100 encounters against "
                f"{baseline.alerts_per_100:.1f} validated ({change:+.0%})",
                w,
            )
        if w.judged_alerts < policy.windows.min_judged_alerts:
            continue  # too few answered-or-ignored alerts to judge the workflow
        if w.override_rate is not None and w.override_rate > t.override_rate_max:
            reasons = ", ".join(f"{r} ({n})" for r, n in w.override_reasons.items()) or "none"
            raise_(
                "workflow",
                "warning",
                f"{when}: clinicians overrode {w.override_rate:.0%} of the alerts they answered "
                f"(reasons: {reasons})",
                w,
            )
        if (
            w.acknowledgement_rate is not None
            and w.acknowledgement_rate < t.acknowledgement_rate_min
        ):
            raise_(
                "workflow",
                "warning",
                f"{when}: only {w.acknowledgement_rate:.0%} of {w.judged_alerts} alerts were "
                f"answered within {policy.windows.feedback_hours:g} h; {w.ignored} ignored",
                w,
            )
    return out
