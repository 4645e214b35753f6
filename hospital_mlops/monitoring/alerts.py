"""The monitoring alerts: each threshold a window's metrics (windows.py) cross, and a feed gone
silent, addressed to the owner of its kind in one of two tiers (act: may hold or roll back a
rollout; investigate: someone looks). Pure: windows in, alerts out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from hospital_mlops.monitoring.policy import AlertKind, MonitoringPolicy
from hospital_mlops.monitoring.window_grid import iso_utc, window_starts
from hospital_mlops.monitoring.windows import Baseline, Window


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
