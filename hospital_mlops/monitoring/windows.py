"""Per-window metrics against the baseline of the last validated period. Pure: frames and
arrays in, dataclasses out. The alerts they raise are in alerts.py.

Until outcomes arrive, performance is *estimated* from the calibrated risks themselves
(confidence-based performance estimation, as NannyML's CBPE does): each prediction counts as a
case with probability ``risk``. That estimate is only as good as the calibration, so it is
always labelled an estimate and shown beside the realized numbers once they exist.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from hospital_mlops.model.evaluate import weighted
from hospital_mlops.monitoring.auroc_bootstrap import auroc_with_ci
from hospital_mlops.monitoring.policy import MonitoringPolicy
from hospital_mlops.monitoring.window_grid import iso_utc, sorted_groups, window_starts
from hospital_mlops.monitoring.workflow import workflow_of


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
    """The drift detector's results for one window's time span: its tested windows, those with
    an investigate-tier input alert, the inputs that moved (largest excess first, with their
    magnitudes), the act tier's data faults, and whether the score moved."""

    tests: int
    drifted_tests: int
    drifted_features: list[str]
    moved: list[dict[str, Any]] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)
    score_shift: bool = False


@dataclass(frozen=True)
class Window:
    start: str
    end: str
    n: int
    n_outcomes: int
    data_drift: bool | None  # None: no detector result in this window
    drifted_features: list[str]
    # the detector's calibrated score shift (False without a detector result); the KS p-value
    # below is a secondary statistic and raises no alert
    score_drift: bool
    score_drift_p_value: float
    auroc: float | None  # realized, once enough outcomes have arrived
    auroc_ci: list[float] | None
    ece: float | None
    # the ECE a perfectly calibrated model reaches by chance on these risks and this many
    # outcomes, at 1 − calibration_false_alarm_rate
    ece_by_chance: float | None
    observed_to_expected: float | None
    observed_to_expected_ci: list[float] | None  # exact Poisson, at the same rate
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
    # the detector's tiered alerts in this window: the act tier's data faults, and the inputs
    # beyond their calibrated thresholds (subject, statistic, magnitude, threshold, range)
    data_faults: list[str] = field(default_factory=list)
    moved_inputs: list[dict[str, Any]] = field(default_factory=list)
    # the size of the score's move: the KS distance of the window's risks from the validated
    # period's, and the distance at which the KS p-value crosses the policy's threshold for
    # these sample sizes (asymptotic); what the report plots, a magnitude against its threshold
    score_drift_distance: float = 0.0
    score_drift_distance_threshold: float = 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def ks_distance_threshold(p_value: float, n: int, m: int) -> float:
    """The two-sample KS distance whose asymptotic p-value is ``p_value`` for samples of ``n``
    and ``m``: c(α)·√((n+m)/(n·m)), c(α) = √(−ln(α/2)/2)."""
    if n == 0 or m == 0:
        return 1.0
    return float(math.sqrt(-math.log(p_value / 2) / 2) * math.sqrt((n + m) / (n * m)))


_CHANCE_DRAWS = 2000


def ece_by_chance(risk: np.ndarray, bin_of: np.ndarray, rate: float, seed: int) -> float:
    """The (1 − rate) quantile of the ECE a perfectly calibrated model shows on these risks:
    each bin's events drawn as Binomial(bin size, the bin's mean risk). That is a little wider
    than the exact Poisson-binomial, so the bound errs toward fewer alerts."""
    rng = np.random.default_rng([seed, len(risk)])
    size = np.bincount(bin_of).astype("int64")
    expected = np.bincount(bin_of, weights=risk)
    events = rng.binomial(
        size, np.clip(expected / np.maximum(size, 1), 0, 1), (_CHANCE_DRAWS, len(size))
    )
    draws = np.abs(events - expected).sum(axis=1) / len(risk)
    return float(np.quantile(draws, 1 - rate))


def observed_to_expected_ci(observed: float, expected: float, rate: float) -> list[float]:
    """The exact (Garwood) Poisson interval of the observed count, over the expected count."""
    low = stats.chi2.ppf(rate / 2, 2 * observed) / 2 if observed > 0 else 0.0
    high = stats.chi2.ppf(1 - rate / 2, 2 * observed + 2) / 2
    return [round(float(low / expected), 6), round(float(high / expected), 6)]


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
    tiered = inside.get("decided_by", pd.Series("p_value", index=inside.index)) == "tiers"
    alerts = [a for found in inside.get("alerts", []) for a in found]
    # the detector may test several times in a window: each input once, at its largest move
    largest: dict[tuple[str, str], dict[str, Any]] = {}
    for a in alerts:
        if a["tier"] == "investigate" and a["subject"] != "risk":
            key = (a["subject"], a["statistic"])
            if key not in largest or a["magnitude"] > largest[key]["magnitude"]:
                largest[key] = a
    moved = sorted(largest.values(), key=lambda a: -a["magnitude"] / max(a["threshold"], 1e-12))
    faults = list(dict.fromkeys(a["detail"] for a in alerts if a["tier"] == "act"))
    # a p-value result (a version without a drift baseline) still counts as it used to
    drifted = inside[
        [
            (bool(f) if t else bool(d))
            for f, d, t in zip(inside["drifted_features"], inside["is_drift"], tiered, strict=True)
        ]
    ]
    features = list(dict.fromkeys(f for fs in drifted["drifted_features"] for f in fs))
    return DriftSummary(
        len(inside),
        len(drifted),
        features,
        moved=[
            {k: a[k] for k in ("subject", "statistic", "magnitude", "threshold", "baseline_range")}
            for a in moved
        ],
        faults=faults,
        score_shift=any(a["subject"] == "risk" for a in alerts),
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
        ece = observed_to_expected = chance = None
        oe_ci = None
        if realized:
            t = policy.thresholds
            bins = weighted.quantile_bins(risk[known], t.calibration_bins)
            ece = float(weighted.ece(y, risk[known], bins, np.ones((1, len(y))))[0])
            chance = ece_by_chance(risk[known], bins, t.calibration_false_alarm_rate, b.seed)
            observed_to_expected = float(y.mean() / risk[known].mean())
            oe_ci = observed_to_expected_ci(
                float(y.sum()), float(risk[known].sum()), t.calibration_false_alarm_rate
            )
        ks = stats.ks_2samp(risk, baseline.scores)
        distance_threshold = ks_distance_threshold(
            policy.thresholds.score_drift_p_value, len(risk), len(baseline.scores)
        )
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
            start=iso_utc(start),
            end=iso_utc(end),
            n=len(rows),
            n_outcomes=with_outcomes,
            data_drift=None if summary is None else summary.drifted_tests > 0,
            drifted_features=[] if summary is None else summary.drifted_features,
            score_drift=bool(summary is not None and summary.score_shift),
            score_drift_p_value=float(ks.pvalue),
            auroc=None if auroc is None else round(auroc, 6),
            auroc_ci=ci,
            ece=None if ece is None else round(ece, 6),
            ece_by_chance=None if chance is None else round(chance, 6),
            observed_to_expected=(
                None if observed_to_expected is None else round(observed_to_expected, 6)
            ),
            observed_to_expected_ci=oe_ci,
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
            data_faults=[] if summary is None else summary.faults,
            moved_inputs=[] if summary is None else summary.moved[:10],
            score_drift_distance=round(float(ks.statistic), 6),
            score_drift_distance_threshold=round(distance_threshold, 6),
        )

    groups = [(key, rows) for key, rows in sorted_groups(window) if key >= 0]  # not NaT
    # a window is sorts, draws and reductions in numpy, which leave the GIL: windows share the
    # cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda group: one(*group), groups))
