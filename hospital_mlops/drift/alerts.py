"""One window of served inputs judged against its baseline, as tiered alerts (the
monitoring-without-noise issue, item 2).

Two tiers, and a statistic belongs to exactly one (``config/monitoring.yaml`` declares which):

* **investigate**: a drift magnitude beyond its calibrated threshold (drift/thresholds.py). The
  window is further from the reference than the baseline period's own windows were; someone
  should look, nothing is rolled back;
* **act**: a hard data fault (drift/data_faults.py): a broken feed, not a changed population. Only
  this tier may hold a rollout or roll back. (A demonstrated impact on outcomes, once they
  arrive, is judged by the monitoring run, not here.)

Every alert carries what its owner needs: the statistic, the input, the magnitude, the
threshold, the baseline's range and a one-line detail. ``DriftBaseline`` is what is kept with a
registered version beside its drift reference, so that serving and monitoring judge windows
with the thresholds the version was validated with.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import pandas as pd

from hospital_mlops.drift.data_faults import (
    RULES,
    DataFault,
    FaultRules,
    ReferenceProfile,
    data_faults,
    refused_requests,
    repeated_encounters,
    silent_feed,
)
from hospital_mlops.drift.thresholds import (
    MIN_BASELINE_WINDOWS,
    DriftThresholds,
    Kind,
    Statistic,
    ThresholdError,
    calibrate,
    exceedances,
    numeric_scale,
)

Tier = Literal["investigate", "act"]
TIERS: tuple[Tier, ...] = ("investigate", "act")
STATISTICS: tuple[str, ...] = (*get_args(Statistic), *RULES)
DEFAULT_TIERS: dict[str, Tier] = {
    **{s: "investigate" for s in get_args(Statistic)},
    **{r: "act" for r in RULES},
}


def check_tiers(tiers: Mapping[str, str]) -> dict[str, Tier]:
    """Every statistic in exactly one tier; the message names what is wrong."""
    unknown = sorted(set(tiers) - set(STATISTICS))
    if unknown:
        raise ThresholdError(f"tiers: unknown statistics {unknown} (known: {list(STATISTICS)})")
    missing = sorted(set(STATISTICS) - set(tiers))
    if missing:
        raise ThresholdError(f"tiers: no tier for {missing}")
    bad = {s: t for s, t in tiers.items() if t not in TIERS}
    if bad:
        raise ThresholdError(f"tiers: {bad} (a tier is investigate or act)")
    return {s: tiers[s] for s in STATISTICS}  # type: ignore[misc]


@dataclass(frozen=True)
class DriftAlert:
    tier: Tier
    statistic: str  # a drift statistic or a data-fault rule
    subject: str  # the input, "risk" (the score) or "(requests)" / "(encounters)" / …
    magnitude: float
    threshold: float
    baseline_range: tuple[float, float] | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "tier": self.tier,
            "statistic": self.statistic,
            "subject": self.subject,
            "magnitude": round(self.magnitude, 6),
            "threshold": round(self.threshold, 6),
            "baseline_range": (
                None if self.baseline_range is None else [round(v, 6) for v in self.baseline_range]
            ),
            "detail": self.detail,
        }


@dataclass(frozen=True)
class DriftBaseline:
    """The thresholds of one reference, what the fault rules need of it, and the policy it was
    calibrated under (which statistic is in which tier; the fault rules' limits)."""

    thresholds: DriftThresholds | None  # None: the baseline was too short to calibrate (see why)
    profile: ReferenceProfile
    kinds: Mapping[str, Kind]
    scales: Mapping[str, float]
    encounters_per_hour: float | None  # the baseline's rate, for a silent feed (None: unknown)
    tiers: Mapping[str, Tier] = field(default_factory=lambda: dict(DEFAULT_TIERS))
    rules: FaultRules = field(default_factory=FaultRules)
    not_calibrated: str = ""  # why there are no thresholds: the investigate tier does not run

    @property
    def false_alarm_rate(self) -> float | None:
        return None if self.thresholds is None else self.thresholds.false_alarm_rate

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": None if self.thresholds is None else self.thresholds.to_json(),
            "not_calibrated": self.not_calibrated,
            "profile": self.profile.to_json(),
            "kinds": dict(self.kinds),
            "scales": dict(self.scales),
            "encounters_per_hour": self.encounters_per_hour,
            "tiers": dict(self.tiers),
            "rules": asdict(self.rules),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DriftBaseline:
        try:
            rate = data["encounters_per_hour"]
            return cls(
                thresholds=(
                    None
                    if data["thresholds"] is None
                    else DriftThresholds.from_json(data["thresholds"])
                ),
                profile=ReferenceProfile.from_json(data["profile"]),
                kinds=dict(data["kinds"]),
                scales={k: float(v) for k, v in data["scales"].items()},
                encounters_per_hour=None if rate is None else float(rate),
                tiers=check_tiers(data.get("tiers", DEFAULT_TIERS)),
                rules=FaultRules(**data.get("rules", {})),
                not_calibrated=str(data.get("not_calibrated", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ThresholdError(f"drift baseline: not readable ({exc})") from None


def build_baseline(
    baseline: pd.DataFrame,
    kinds: Mapping[str, Kind],
    *,
    window: int,
    false_alarm_rate: float,
    hours: float | None = None,
    tiers: Mapping[str, str] | None = None,
    rules: FaultRules | None = None,
) -> DriftBaseline:
    """Calibrate on ``baseline`` (in time order; the score in ``risk``). ``hours``: the time the
    baseline's rows span, for the silent-feed rule's expected rate. A baseline too short for
    thresholds still gives the fault rules their profile; ``not_calibrated`` says why the
    investigate tier cannot run (a wrong rate or window is still an error)."""
    thresholds: DriftThresholds | None = None
    why = ""
    if len(baseline) < MIN_BASELINE_WINDOWS * window:
        why = (
            f"the baseline has {len(baseline)} rows, fewer than {MIN_BASELINE_WINDOWS} windows "
            f"of {window}"
        )
    else:
        thresholds = calibrate(baseline, kinds, window=window, false_alarm_rate=false_alarm_rate)
    scales = {n: numeric_scale(baseline[n]) for n, k in kinds.items() if k == "numeric"}
    rate = len(baseline) / hours if hours and hours > 0 else None
    profile = ReferenceProfile.of(baseline, kinds)
    return DriftBaseline(
        thresholds,
        profile,
        dict(kinds),
        scales,
        rate,
        check_tiers(tiers if tiers is not None else DEFAULT_TIERS),
        rules or FaultRules(),
        why,
    )


def _from_fault(fault: DataFault, tiers: Mapping[str, Tier]) -> DriftAlert:
    return DriftAlert(
        tiers[fault.rule], fault.rule, fault.input, fault.observed, fault.limit, None, fault.detail
    )


def assess_window(
    baseline: DriftBaseline,
    reference: pd.DataFrame,
    window: pd.DataFrame,
    *,
    refused: Mapping[str, int] | None = None,
    keys: pd.Series | None = None,
    hours: float | None = None,
    tiers: Mapping[str, Tier] | None = None,
    rules: FaultRules | None = None,
) -> list[DriftAlert]:
    """The window's alerts, the act tier first, each tier largest excess first.

    ``reference``: the drift reference's rows (inputs, and ``risk`` if the score is watched);
    ``refused``: requests the endpoint refused in the window, by field; ``keys``: the rows'
    encounter tokens; ``hours``: the time the window took to fill."""
    tiers = tiers or baseline.tiers
    rules = rules or baseline.rules
    faults: list[DataFault] = []
    if len(window):
        faults += data_faults(window, baseline.kinds, baseline.profile, rules)
    found = refused_requests(len(window), refused or {}, rules)
    if found is not None:
        faults.append(found)
    if keys is not None:
        found = repeated_encounters(keys, rules)
        if found is not None:
            faults.append(found)
    # a window filled within one timestamp (a burst) is the opposite of a silent feed
    if hours is not None and hours > 0 and baseline.encounters_per_hour:
        total = len(window) + sum((refused or {}).values())
        found = silent_feed(total, hours, baseline.encounters_per_hour, rules)
        if found is not None:
            faults.append(found)
    alerts = [_from_fault(f, tiers) for f in faults]
    if baseline.thresholds is not None and len(window) >= _min_rows(baseline.thresholds):
        beyond = exceedances(
            reference, window, baseline.kinds, baseline.thresholds, baseline.scales
        )
        for e in beyond:
            alerts.append(
                DriftAlert(
                    tiers[e.statistic], e.statistic, e.name, e.magnitude, e.threshold,
                    e.baseline_range,
                    f"{e.name}: {e.statistic.replace('_', ' ')} {e.magnitude:.3g} beyond "
                    f"{e.threshold:.3g} (baseline windows {e.baseline_range[0]:.3g}–"
                    f"{e.baseline_range[1]:.3g})",
                )
            )  # fmt: skip
    order = {t: i for i, t in enumerate(("act", "investigate"))}
    return sorted(
        alerts,
        key=lambda a: (order[a.tier], -a.magnitude / max(a.threshold, 1e-12)),
    )


def _min_rows(thresholds: DriftThresholds) -> int:
    """Magnitudes are calibrated at the baseline's window size; a window far smaller has a far
    noisier magnitude, so it is judged only by the fault rules."""
    return max(50, math.ceil(thresholds.window / 2))


def judged_by_magnitude(baseline: DriftBaseline, rows: int) -> bool:
    """Whether a window of ``rows`` gets the investigate tier (else: the fault rules only)."""
    return baseline.thresholds is not None and rows >= _min_rows(baseline.thresholds)
