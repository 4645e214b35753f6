"""Are the clinician's reasons stable? The top reasons of an encounter should not change when
its inputs change in ways that mean nothing clinically.

Each perturbation below is one such change; the measure is the mean top-k overlap
|A ∩ B| / max(|A|, |B|) between the reasons for the original and for the perturbed encounter
(= |A ∩ B| / 3 when both have three reasons), over real encounters and every perturbation.
Jaccard |A ∩ B| / |A ∪ B| is reported alongside: it is stricter (one swapped reason out of three
gives 0.5, not 0.67).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Instance = dict[str, Any]
# raw instances → per instance, the reason keys (features) the clinician is shown, ranked
ReasonsOf = Callable[[list[Instance]], list[list[str]]]

LAB_TESTS = ("num_lab_procedures", 1, 200)  # the catalog's plausible range
MEDICATIONS = ("num_medications", 0, 120)


def _shift(field: tuple[str, int, int], delta: int) -> Callable[[Instance], Instance]:
    name, low, high = field

    def perturb(instance: Instance) -> Instance:
        value = int(instance[name]) + delta
        # At a range edge the shift goes the other way, so every instance is perturbed.
        if not low <= value <= high:
            value = int(instance[name]) - delta
        return {**instance, name: value}

    return perturb


def _reordered(instance: Instance) -> Instance:
    return dict(reversed(list(instance.items())))


@dataclass(frozen=True)
class Perturbation:
    name: str
    why_meaningless: str
    apply: Callable[[Instance], Instance]


# Not perturbed, because they are clinically meaningful: length of stay, prior admissions and
# visits, diagnoses, medications and their changes, lab results, discharge destination.
PERTURBATIONS = (
    Perturbation(
        "lab_tests_plus_one",
        "one more lab test in a stay that already has dozens is ordering habit, not a change in "
        "the patient",
        _shift(LAB_TESTS, +1),
    ),
    Perturbation(
        "lab_tests_minus_one", "one lab test fewer: the same, the other way", _shift(LAB_TESTS, -1)
    ),
    Perturbation(
        "medications_plus_one",
        "one more distinct medication in the count (a single as-needed dose) says nothing new "
        "about the patient",
        _shift(MEDICATIONS, +1),
    ),
    Perturbation(
        "medications_minus_one", "one medication fewer in the count", _shift(MEDICATIONS, -1)
    ),
    Perturbation(
        "inputs_reordered",
        "the order of the inputs in the request body carries no information at all",
        _reordered,
    ),
)


def overlap(a: Sequence[str], b: Sequence[str]) -> float:
    """|A ∩ B| / max(|A|, |B|); two empty reason lists agree."""
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / max(len(set(a)), len(set(b)))


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    if not a and not b:
        return 1.0
    return len(set(a) & set(b)) / len(set(a) | set(b))


@dataclass(frozen=True)
class StabilityReport:
    instances: int
    mean_overlap: float  # |A ∩ B| / max(|A|, |B|), over instances × perturbations
    mean_jaccard: float
    per_perturbation: Mapping[str, float]  # mean overlap per perturbation
    metric: str = "top-k overlap |A ∩ B| / max(|A|, |B|) (= |A ∩ B| / 3 for three reasons)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "instances": self.instances,
            "mean_overlap": round(self.mean_overlap, 4),
            "mean_jaccard": round(self.mean_jaccard, 4),
            "per_perturbation": {k: round(v, 4) for k, v in self.per_perturbation.items()},
            "metric": self.metric,
            "perturbations": {p.name: p.why_meaningless for p in PERTURBATIONS},
        }


def measure_stability(
    instances: Sequence[Instance],
    reasons_of: ReasonsOf,
    perturbations: Sequence[Perturbation] = PERTURBATIONS,
) -> StabilityReport:
    """Mean top-k overlap between the reasons for each instance and for its perturbed copies."""
    base = reasons_of(list(instances))
    overlaps: list[float] = []
    jaccards: list[float] = []
    per: dict[str, float] = {}
    for perturbation in perturbations:
        changed = reasons_of([perturbation.apply(dict(i)) for i in instances])
        scores = [overlap(a, b) for a, b in zip(base, changed, strict=True)]
        jaccards += [jaccard(a, b) for a, b in zip(base, changed, strict=True)]
        per[perturbation.name] = sum(scores) / len(scores)
        overlaps += scores
    return StabilityReport(
        instances=len(instances),
        mean_overlap=sum(overlaps) / len(overlaps),
        mean_jaccard=sum(jaccards) / len(jaccards),
        per_perturbation=per,
    )
