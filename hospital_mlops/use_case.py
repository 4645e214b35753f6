"""The use case a model serves: its intended use, split policy, thresholds, subgroups and gates.

Loaded from ``config/use_case.yaml`` and validated here. Gates and thresholds are declared before
evaluation and read by the pipeline; nothing in evaluation writes back to them. A subgroup
justification answers a flag, so it says who wrote it, on which day, and whether before or after
the evaluation that raised the flag: one written after is post hoc, and the evidence says so.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from hospital_mlops.config_files import StrictModel, load_yaml_models
from hospital_mlops.paths import config_path

Probability = Annotated[float, Field(ge=0, le=1)]


class UseCaseError(ValueError):
    """The use-case file is missing, malformed or names something that does not exist."""


class Fractions(StrictModel):
    train: Annotated[float, Field(gt=0, lt=1)]
    validation: Annotated[float, Field(gt=0, lt=1)]
    test: Annotated[float, Field(gt=0, lt=1)]

    @model_validator(mode="after")
    def _sum_to_one(self) -> Fractions:
        total = self.train + self.validation + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + validation + test must be 1, not {total:g}")
        return self


class SplitPolicy(StrictModel):
    time_column: str
    # "time": a timestamp column, windows in days; "order": a rank proxy, windows in encounters
    axis: Literal["time", "order"]
    fractions: Fractions
    label_window: Annotated[int, Field(ge=0)]
    embargo: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _embargo_covers_the_label_window(self) -> SplitPolicy:
        # Refused here, before any data is read; `splits` checks the actual periods again.
        if self.embargo < self.label_window:
            unit = "days" if self.axis == "time" else "encounters"
            raise ValueError(
                f"embargo ({self.embargo} {unit}) is shorter than the label window "
                f"({self.label_window} {unit}): training labels would see into the next period"
            )
        return self


class Subgroup(StrictModel):
    column: str
    labels: dict[str, str] = Field(default_factory=dict)
    bands: list[float] | None = None

    @model_validator(mode="after")
    def _bands_ascend(self) -> Subgroup:
        if self.bands is not None and (
            len(self.bands) < 2 or any(a >= b for a, b in pairwise(self.bands))
        ):
            raise ValueError("bands must be at least two ascending edges")
        return self


class ModelGates(StrictModel):
    min_auroc_lower_bound: Probability
    max_auroc: Probability = 1.0
    calibration_slope: tuple[float, float]
    max_ece: Probability
    must_beat_comparator: bool = True


class SourceUse(StrictModel):
    split: SplitPolicy
    extra_slices: list[str] = Field(default_factory=list)
    subgroups: dict[str, Subgroup]
    comparator: Annotated[list[str], Field(min_length=1)]
    gates: ModelGates


class Capacity(StrictModel):
    """A worklist sized by the team that works it: the top ``worklist_size`` of a day's
    ``admissions_per_day`` (case management's capacity, not a risk budget)."""

    worklist_size: Annotated[int, Field(ge=1)]
    admissions_per_day: Annotated[float, Field(gt=0)]

    @model_validator(mode="after")
    def _fits(self) -> Capacity:
        if self.worklist_size >= self.admissions_per_day:
            raise ValueError("the worklist must be shorter than a day's admissions")
        return self


class ThresholdUse(StrictModel):
    """The share of encounters a use of the score flags: declared directly, or from a capacity
    (then ``alerts_per_100`` is derived from it and must not be given as well)."""

    description: str
    alerts_per_100: Annotated[float, Field(gt=0, lt=100)]
    capacity: Capacity | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_capacity(cls, raw: object) -> object:
        if isinstance(raw, dict) and raw.get("capacity") is not None:
            if "alerts_per_100" in raw:
                raise ValueError("give alerts_per_100 or capacity, not both")
            cap = Capacity.model_validate(raw["capacity"])
            return {**raw, "alerts_per_100": 100.0 * cap.worklist_size / cap.admissions_per_day}
        return raw


class DecisionThresholds(StrictModel):
    primary: str
    uses: dict[str, ThresholdUse]

    @model_validator(mode="after")
    def _primary_exists(self) -> DecisionThresholds:
        if self.primary not in self.uses:
            raise ValueError(f"primary threshold {self.primary!r} is not one of {list(self.uses)}")
        return self


class Justification(StrictModel):
    """A flagged subgroup's written justification, with who wrote it and when."""

    text: Annotated[str, Field(min_length=20)]
    by: Annotated[str, Field(min_length=1)]
    written_on: date
    # did the writer see this flag raised? "after" is post hoc: it is kept and shown as such
    relative_to_evaluation: Literal["before", "after"]

    def post_hoc(self, evaluated_on: date) -> bool:
        """Written after the evaluation, by its own account or by its date."""
        return self.relative_to_evaluation == "after" or self.written_on > evaluated_on

    def record(self, flag: str, evaluated_on: date) -> dict[str, str | bool]:
        return {
            "flag": flag,
            "by": self.by,
            "written_on": self.written_on.isoformat(),
            "relative_to_evaluation": self.relative_to_evaluation,
            "evaluated_on": evaluated_on.isoformat(),
            "post_hoc": self.post_hoc(evaluated_on),
        }


class SubgroupPolicy(StrictModel):
    ratio_bounds: tuple[float, float] = (0.8, 1.25)
    min_group_rows: Annotated[int, Field(ge=1)] = 200
    min_group_events: Annotated[int, Field(ge=1)] = 20
    metrics: list[Literal["sensitivity", "observed_to_expected", "ppv", "selection_rate"]]
    justifications: dict[str, Justification] = Field(default_factory=dict)


class EvaluationPolicy(StrictModel):
    bootstrap_replicates: Annotated[int, Field(ge=50)] = 1000
    ci_level: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    calibration_bins: Annotated[int, Field(ge=2)] = 10
    decision_curve_thresholds: tuple[Probability, Probability] = (0.05, 0.5)
    seed: int = 0


class TrainingConfig(StrictModel):
    seed: int = 7
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.05
    max_depth: Annotated[int, Field(ge=1, le=16)] = 4
    min_child_weight: Annotated[float, Field(ge=0)] = 20
    subsample: Annotated[float, Field(gt=0, le=1)] = 0.8
    colsample_bytree: Annotated[float, Field(gt=0, le=1)] = 0.8
    max_rounds: Annotated[int, Field(ge=1)] = 2000
    early_stopping_rounds: Annotated[int, Field(ge=1)] = 100


class LabelCodes(StrictModel):
    """A label read from one coded column: every code the catalog knows is placed in exactly one
    list, so a code nobody thought about cannot fall silently on either side."""

    column: str
    positive: Annotated[list[int], Field(min_length=1)]
    negative: Annotated[list[int], Field(min_length=1)]
    # codes whose meaning for this label is unclear: dropped from training and evaluation, listed
    excluded_ambiguous: dict[int, str] = Field(default_factory=dict)
    # codes outside the intended use (e.g. deaths, hospice): never trained on, never scored
    outside_intended_use: dict[int, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _each_code_once(self) -> LabelCodes:
        lists = {
            "positive": set(self.positive),
            "negative": set(self.negative),
            "excluded_ambiguous": set(self.excluded_ambiguous),
            "outside_intended_use": set(self.outside_intended_use),
        }
        seen: dict[int, str] = {}
        for name, codes in lists.items():
            for code in sorted(codes):
                if code in seen:
                    raise ValueError(f"code {code} is in both {seen[code]} and {name}")
                seen[code] = name
        return self

    def all_codes(self) -> set[int]:
        return {
            *self.positive,
            *self.negative,
            *self.excluded_ambiguous,
            *self.outside_intended_use,
        }


class Label(StrictModel):
    name: str
    definition: str
    window_days: Annotated[int, Field(ge=1)]
    codes: LabelCodes | None = None


class UseCase(StrictModel):
    version: str
    id: str
    title: str
    # the registry's name for this use case's model (None: governance.yaml's
    # registered_model_name, the first use case's)
    model_name: str | None = None
    # the name the predictor serves under (``/v1/models/NAME``, ``/v2/models/NAME``) and the
    # InferenceService's; None: the id with "_" as "-"
    served_name: Annotated[str | None, Field(pattern=r"^[a-z]([-a-z0-9]{0,40}[a-z0-9])?$")] = None
    # the catalog use (config/catalog.yaml `uses`) this use case's runs read their data under
    purpose: str | None = None
    # how a clinician-facing explanation names the risk ("Chance of ..."); None: the title
    risk_wording: str | None = None
    intended_use: str
    intended_users: list[str]
    intended_population: str
    decision_role: Literal["informs", "augments", "replaces"]
    prediction_time: str
    out_of_scope: list[str]
    # what the label or the prediction time cannot see (the source's own limitations are the
    # catalog's); listed in the validation report and the model card
    limitations: list[str] = Field(default_factory=list)
    label: Label
    sources: dict[str, SourceUse]
    thresholds: DecisionThresholds
    subgroup_policy: SubgroupPolicy
    evaluation: EvaluationPolicy = EvaluationPolicy()
    training: TrainingConfig = TrainingConfig()
    # the day the gates above were declared: the evidence compares it with the evaluation's
    gates_declared_on: date | None = None

    def gates_declaration(self, evaluated_on: date) -> dict[str, str | None]:
        """When the gates were declared, relative to an evaluation's day. A date alone cannot
        order two events of one day: "on the evaluation's day" says so, and the repository's
        history (the commit that declared the gates) is the finer record."""
        declared = self.gates_declared_on
        if declared is None:
            return {"gates_declared_on": None, "gates_declared": "not recorded"}
        if declared < evaluated_on:
            order = "before the evaluation"
        elif declared == evaluated_on:
            order = "on the evaluation's day"
        else:
            order = "after the evaluation (post hoc)"
        return {"gates_declared_on": declared.isoformat(), "gates_declared": order}

    @property
    def risk_phrase(self) -> str:
        return self.risk_wording or f"Risk ({self.title})"

    @property
    def served_as(self) -> str:
        return self.served_name or self.id.replace("_", "-")

    def for_source(self, source: str) -> SourceUse:
        if source not in self.sources:
            raise UseCaseError(
                f"use case {self.id!r} declares no split, subgroups or gates for source "
                f"{source!r}; declared: {sorted(self.sources)}"
            )
        return self.sources[source]

    @property
    def content_version(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


def load_use_cases(path: Path | str | None = None) -> dict[str, UseCase]:
    """Every use case of the file (one YAML document each), by id; the first is the default."""
    source = Path(path) if path else config_path("use_case.yaml")
    found: dict[str, UseCase] = {}
    for case in load_yaml_models(source, UseCase, UseCaseError, "use case"):
        if case.id in found:
            raise UseCaseError(f"use case {source}: the id {case.id!r} is declared twice")
        found[case.id] = case
    return found


def load_use_case(path: Path | str | None = None, use_case: str | None = None) -> UseCase:
    """One use case by id; without an id, the file's first (the readmission model's)."""
    cases = load_use_cases(path)
    if use_case is None:
        return next(iter(cases.values()))
    if use_case not in cases:
        raise UseCaseError(f"no use case {use_case!r}; declared: {', '.join(cases)}")
    return cases[use_case]


def purpose_of(use: str | None, use_case: str | None) -> str:
    """The catalog use a run reads its data under: as given, else the use case's purpose."""
    if use:
        return use
    declared = load_use_case(use_case=use_case)
    if declared.purpose is None:
        raise UseCaseError(f"use case {declared.id!r} declares no purpose: give --use")
    return declared.purpose
