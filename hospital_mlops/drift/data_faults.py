"""Hard data faults in a window of served inputs: the act tier's fixed rules (the
monitoring-without-noise issue, item 2; not wired in yet).

Calibrated drift thresholds (drift/thresholds.py) say "further from the reference than the
baseline ever was": a reason to look. Some changes need no calibration, because no ordinary week
produces them and each is a broken feed rather than a changed population:

* **an input gone missing**: its missing share reaches ``all_missing_share`` (0.95) where the
  reference had it mostly present (missing share below 0.5);
* **a new category taking a material share**: values the reference never had make up at least
  ``new_category_share`` (0.05) of the window (one odd encounter is not a fault; a code table
  changed upstream is);
* **a unit change**: a numeric input's median moves by a factor of ``unit_factor`` (2) or more
  against the reference's, or ``out_of_range_share`` (0.2) of its values fall outside the
  reference's 0.1–99.9 percentile range (mg/dL read as mmol/L is a factor of 18);
* **a silent feed**: a window holds fewer than ``silent_share`` (0.1) of the encounters the
  baseline's rate expects for its length;
* **requests refused**: the endpoint refuses (a field-level 4xx) at least ``refused_share``
  (0.005: 5 in 1,000) of a window's requests. The endpoint refuses a value outside the
  catalogued range or list and a number sent as text, so at serving a recoded category, an
  impossible value and a retyped field show up here rather than in the window's distribution;
  the baseline, having passed the pipeline's gates, refuses none, and each refusal is a
  discharge that got no score;
* **repeated encounters**: at least ``repeated_share`` (0.003: 3 in 1,000) of a window's rows
  are an encounter already scored in it (a feed resending under another spelling of the ID:
  each resend can alert a clinician twice). A workflow that legitimately scores an encounter
  more than once (a hook fired at order-sign and again at discharge) should raise it.

Each fault names the input, the rule and the observed value, for the owner and the audit log.
Pure: pandas and numpy on the frames it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd

from hospital_mlops.drift.thresholds import Kind

Rule = Literal[
    "input_missing",
    "new_category",
    "unit_change",
    "silent_feed",
    "requests_refused",
    "repeated_encounters",
]
RULES: tuple[Rule, ...] = get_args(Rule)


@dataclass(frozen=True)
class FaultRules:
    all_missing_share: float = 0.95
    new_category_share: float = 0.05
    unit_factor: float = 2.0
    out_of_range_share: float = 0.2
    silent_share: float = 0.1
    refused_share: float = 0.005
    repeated_share: float = 0.003

    def __post_init__(self) -> None:
        for name in (
            "all_missing_share",
            "new_category_share",
            "out_of_range_share",
            "refused_share",
            "repeated_share",
        ):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} {value!r}: must be in (0, 1]")
        if not 0.0 < self.silent_share < 1.0:
            raise ValueError(f"silent_share {self.silent_share!r}: must be in (0, 1)")
        if self.unit_factor <= 1.0:
            raise ValueError(f"unit_factor {self.unit_factor!r}: must be above 1")


@dataclass(frozen=True)
class DataFault:
    input: str
    rule: Rule
    observed: float
    limit: float
    detail: str


@dataclass(frozen=True)
class ReferenceProfile:
    """What the rules need of the reference, computed once (kept with the thresholds)."""

    missing_share: Mapping[str, float]
    categories: Mapping[str, frozenset[str]]  # categorical inputs: the labels seen
    median: Mapping[str, float]  # numeric inputs
    range_: Mapping[str, tuple[float, float]]  # numeric inputs: 0.1 and 99.9 percentiles

    @classmethod
    def of(cls, reference: pd.DataFrame, kinds: Mapping[str, Kind]) -> ReferenceProfile:
        missing, categories, median, range_ = {}, {}, {}, {}
        for name, kind in kinds.items():
            column = reference[name]
            missing[name] = float(column.isna().mean())
            if kind == "categorical":
                categories[name] = frozenset(column.dropna().astype(str).unique())
            else:
                values = pd.to_numeric(column, errors="coerce").dropna().to_numpy(dtype="float64")
                if len(values):
                    median[name] = float(np.median(values))
                    low, high = np.percentile(values, [0.1, 99.9])
                    range_[name] = (float(low), float(high))
        return cls(missing, categories, median, range_)

    def to_json(self) -> dict[str, Any]:
        return {
            "missing_share": dict(self.missing_share),
            "categories": {k: sorted(v) for k, v in self.categories.items()},
            "median": dict(self.median),
            "range": {k: list(v) for k, v in self.range_.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ReferenceProfile:
        return cls(
            {k: float(v) for k, v in data["missing_share"].items()},
            {k: frozenset(str(x) for x in v) for k, v in data["categories"].items()},
            {k: float(v) for k, v in data["median"].items()},
            {k: (float(v[0]), float(v[1])) for k, v in data["range"].items()},
        )


def data_faults(
    window: pd.DataFrame,
    kinds: Mapping[str, Kind],
    profile: ReferenceProfile,
    rules: FaultRules | None = None,
) -> list[DataFault]:
    """Every hard data fault in ``window``, by input."""
    rules = rules or FaultRules()
    found: list[DataFault] = []
    for name, kind in kinds.items():
        column = window[name]
        missing = float(column.isna().mean())
        if missing >= rules.all_missing_share and profile.missing_share.get(name, 0.0) < 0.5:
            found.append(
                DataFault(
                    name, "input_missing", missing, rules.all_missing_share,
                    f"{missing:.0%} of {name} missing (reference "
                    f"{profile.missing_share.get(name, 0.0):.0%})",
                )
            )  # fmt: skip
            continue
        present = column.dropna()
        if present.empty:
            continue
        if kind == "categorical":
            labels = present.astype(str)
            new = ~labels.isin(profile.categories.get(name, frozenset()))
            share = float(new.sum() / len(window))
            if share >= rules.new_category_share:
                seen = ", ".join(sorted(labels[new].unique())[:5])
                found.append(
                    DataFault(
                        name, "new_category", share, rules.new_category_share,
                        f"{share:.0%} of {name} in categories the reference never had: {seen}",
                    )
                )  # fmt: skip
        else:
            found += _unit_change(name, present, profile, rules)
    return found


def _unit_change(
    name: str, present: pd.Series, profile: ReferenceProfile, rules: FaultRules
) -> list[DataFault]:
    if name not in profile.median:
        return []
    values = pd.to_numeric(present, errors="coerce").dropna().to_numpy(dtype="float64")
    if len(values) == 0:
        return []
    reference_median, median = profile.median[name], float(np.median(values))
    if reference_median > 0 and median > 0:
        factor = max(median / reference_median, reference_median / median)
        if factor >= rules.unit_factor:
            return [
                DataFault(
                    name, "unit_change", factor, rules.unit_factor,
                    f"{name}'s median {median:g} against the reference's {reference_median:g} "
                    f"(a factor of {factor:.2g})",
                )
            ]  # fmt: skip
    low, high = profile.range_[name]
    outside = float(np.mean((values < low) | (values > high)))
    if outside >= rules.out_of_range_share:
        return [
            DataFault(
                name, "unit_change", outside, rules.out_of_range_share,
                f"{outside:.0%} of {name} outside the reference's range {low:g}–{high:g}",
            )
        ]  # fmt: skip
    return []


def silent_feed(
    encounters: int, hours: float, baseline_per_hour: float, rules: FaultRules | None = None
) -> DataFault | None:
    """A window far quieter than the baseline's rate: the feed, not the hospital, went quiet."""
    rules = rules or FaultRules()
    if hours <= 0 or baseline_per_hour <= 0:
        raise ValueError("hours and baseline_per_hour must be positive")
    expected = baseline_per_hour * hours
    share = encounters / expected
    if share < rules.silent_share:
        return DataFault(
            "(all inputs)", "silent_feed", share, rules.silent_share,
            f"{encounters} encounters in {hours:g} h where the baseline's rate expects "
            f"{expected:.0f}",
        )  # fmt: skip
    return None


def refused_requests(
    accepted: int, refused: Mapping[str, int], rules: FaultRules | None = None
) -> DataFault | None:
    """Requests the endpoint refused against those it scored; ``refused`` counts them by the
    field named in the refusal (a catalogued name, never a value the client sent)."""
    rules = rules or FaultRules()
    total_refused = sum(refused.values())
    if total_refused == 0:
        return None
    share = total_refused / (accepted + total_refused)
    if share < rules.refused_share:
        return None
    top = sorted(refused.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    fields = ", ".join(f"{name} ({count})" for name, count in top)
    return DataFault(
        "(requests)", "requests_refused", share, rules.refused_share,
        f"{share:.0%} of requests refused ({total_refused} of {accepted + total_refused}); "
        f"most by {fields}",
    )  # fmt: skip


def repeated_encounters(keys: pd.Series, rules: FaultRules | None = None) -> DataFault | None:
    """Rows whose encounter key was already scored in the window (keys are tokens)."""
    rules = rules or FaultRules()
    present = keys.dropna()
    if present.empty:
        return None
    share = float(present.duplicated().sum() / len(present))
    if share < rules.repeated_share:
        return None
    return DataFault(
        "(encounters)", "repeated_encounters", share, rules.repeated_share,
        f"{share:.1%} of the window's rows repeat an encounter already scored in it",
    )  # fmt: skip
