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

from hospital_mlops.model.evaluate import weighted
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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Alert:
    kind: AlertKind
    owner: str
    severity: str  # "warning" (the investigate tier) | "critical" (the act tier)
    message: str
    window_start: str

    @property
    def tier(self) -> str:
        """Act: the only tier that may hold a rollout or roll back; investigate: someone looks."""
        return "act" if self.severity == "critical" else "investigate"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tier": self.tier}


def iso_utc(t: pd.Timestamp | datetime) -> str:
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
        )

    groups = [(key, rows) for key, rows in sorted_groups(window) if key >= 0]  # not NaT
    # a window is sorts, draws and reductions in numpy, which leave the GIL: windows share the
    # cores
    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), os.cpu_count() or 1))) as pool:
        return list(pool.map(lambda group: one(*group), groups))


def _moved(m: dict[str, Any]) -> str:
    low, high = m["baseline_range"] or (0.0, 0.0)
    return (
        f"{m['subject']} {m['statistic'].replace('_', ' ')} {m['magnitude']:.3g} "
        f"(threshold {m['threshold']:.3g}; baseline windows {low:.3g}–{high:.3g})"
    )


def silent_windows(
    windows: list[Window],
    length: timedelta,
    silent_share: float,
    now: datetime | None,
    min_run: int = 1,
) -> list[tuple[str, str, int, float]]:
    """Runs of consecutive windows each holding fewer than ``silent_share`` of the median
    window's predictions (none at all included): a feed gone quiet. (first start, last end,
    predictions in the run, the typical count per window). Judged over closed windows from the
    first with data to the last with data or, given ``now``, to the last closed before it (so a
    feed that stopped altogether is seen). Three windows with data are needed to know what is
    typical. A run shorter than ``min_run`` windows is not reported."""
    step = pd.Timedelta(length)
    counts = {pd.Timestamp(w.start): w.n for w in windows}
    if len(counts) < 3:
        return []
    first = min(counts)
    last = max(counts)
    if now is not None:
        last = max(last, window_starts(pd.Series([pd.Timestamp(now)]), length).iloc[0] - step)
    closed = {t: n for t, n in counts.items() if now is None or t + step <= pd.Timestamp(now)}
    typical = float(np.median(list(closed.values()) or list(counts.values())))
    runs: list[tuple[str, str, int, float]] = []
    run: list[tuple[pd.Timestamp, int]] = []
    start = first
    while start <= last + step:  # one step past the end closes the last run
        n = counts.get(start, 0)
        quiet = start <= last and (now is None or start + step <= pd.Timestamp(now))
        if quiet and n < silent_share * typical:
            run.append((start, n))
        elif run:
            if len(run) >= min_run:
                runs.append(
                    (
                        iso_utc(run[0][0]),
                        iso_utc(run[-1][0] + step),
                        sum(c for _, c in run),
                        typical,
                    )
                )
            run = []
        start += step
    return runs


def alerts_for(
    windows: list[Window],
    baseline: Baseline,
    policy: MonitoringPolicy,
    now: datetime | None = None,
) -> list[Alert]:
    """Each threshold crossed in an assessable window, addressed to the kind's owner; with
    ``now``, a feed silent up to now too (the monitoring run passes it). A
    "critical" alert is the act tier (a hard data fault, or a demonstrated impact on outcomes:
    the only alerts that may hold a rollout or roll one back); a "warning" is the investigate
    tier."""
    t = policy.thresholds
    out: list[Alert] = []
    length = timedelta(hours=policy.windows.length_hours)

    def raise_(kind: AlertKind, severity: str, message: str, w: Window) -> None:
        out.append(Alert(kind, policy.owners[kind], severity, message, w.start))

    for start, end, n, typical in silent_windows(
        windows, length, policy.drift.faults.silent_share, now, policy.windows.silent_after
    ):
        out.append(
            Alert(
                "data_fault", policy.owners["data_fault"], "critical",
                f"{start}–{end}: a silent feed ({n} predictions; a window typically holds "
                f"{typical:.0f})",
                start,
            )
        )  # fmt: skip
    for w in windows:
        when = f"window {w.start}–{w.end} ({w.n} predictions)"
        if w.data_faults:  # a broken feed is a fault however few rows got through
            raise_("data_fault", "critical", f"{when}: " + "; ".join(w.data_faults[:5]), w)
        if not w.assessable:
            continue
        if w.data_drift:
            moved = "; ".join(_moved(m) for m in w.moved_inputs[:5]) or ", ".join(
                w.drifted_features[:5]
            )
            with_it = [
                "scores moved with them" if w.score_drift else "scores did not move",
                (
                    f"observed/expected {w.observed_to_expected:.2f}, ECE {w.ece:.3f}"
                    if w.ece is not None and w.observed_to_expected is not None
                    else "calibration not yet known (outcomes pending)"
                ),
            ]
            raise_(
                "data_drift",
                "warning",
                f"{when}: inputs beyond their calibrated thresholds: {moved} "
                f"({'; '.join(with_it)})",
                w,
            )
        if w.score_drift:
            raise_(
                "score_drift",
                "warning",
                f"{when}: the risk distribution moved beyond its calibrated threshold "
                f"(KS p = {w.score_drift_p_value:.2g}, secondary)",
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
        chance = w.ece_by_chance if w.ece_by_chance is not None else 0.0
        if w.ece is not None and w.ece > max(t.ece_max, chance):
            raise_(
                "calibration",
                "critical",
                f"{when}: ECE {w.ece:.3f} > {t.ece_max} on {w.n_outcomes} outcomes (a "
                f"calibrated model reaches {chance:.3f} by chance at this size)",
                w,
            )
        oe_ci = w.observed_to_expected_ci
        if (
            w.observed_to_expected is not None
            and oe_ci is not None
            and (oe_ci[1] < low or oe_ci[0] > high)
        ):
            raise_(
                "calibration",
                "critical",
                f"{when}: observed/expected events {w.observed_to_expected:.2f} (CI "
                f"{oe_ci[0]:.2f}–{oe_ci[1]:.2f}) outside [{low}, {high}]",
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
