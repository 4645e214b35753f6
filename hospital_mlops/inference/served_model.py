"""What a loaded model is served with, read from the model itself: the feature set it was
trained on (by name, at the same version), its use case and that use case's primary threshold.

One predictor image serves any registered model this way: nothing in the serving path names a
source or a use case.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hospital_mlops.features import (
    FeatureSet,
    ServedInputs,
    feature_set_named,
    primary_feature_set,
    served_inputs,
)
from hospital_mlops.model.train import RiskModel
from hospital_mlops.use_case import UseCase, load_use_case, load_use_cases


class FeatureCodeMismatch(RuntimeError):
    """The installed feature code is not the code the model was trained with."""


@dataclass(frozen=True)
class ServingSetup:
    served: ServedInputs
    use_case: UseCase
    threshold: float  # the use case's primary threshold, as the training run set it

    @property
    def feature_set(self) -> FeatureSet:
        return self.served.feature_set


def use_case_of(training: Mapping[str, Any], tags: Mapping[str, str]) -> UseCase:
    """The use case a version was trained for: its training record's, else its registry tag;
    versions from before use cases were named belong to the first (the readmission model's)."""
    named = str(training.get("use_case") or tags.get("use_case") or "") or None
    return load_use_case(use_case=named)


def feature_set_of(model: RiskModel) -> FeatureSet:
    found = feature_set_named(model.feature_set_name)
    if found is None or found.version != model.feature_set_version:
        raise FeatureCodeMismatch(
            f"the model was trained on feature set {model.feature_set_version}; this release "
            f"defines {found.version if found else 'no such feature set'}"
        )
    return found


def serving_setup(
    model: RiskModel, training: Mapping[str, Any], tags: Mapping[str, str]
) -> ServingSetup:
    use_case = use_case_of(training, tags)
    primary = use_case.thresholds.primary
    thresholds = training.get("thresholds") or {}
    if primary not in thresholds:
        raise KeyError(f"the training record has no {primary!r} threshold for {use_case.id}")
    return ServingSetup(served_inputs(feature_set_of(model)), use_case, float(thresholds[primary]))


@dataclass(frozen=True)
class ServedUseCase:
    """A served name's use case and its feature set's inputs (no model loaded)."""

    served: ServedInputs
    use_case: UseCase


def served_feature_set(served_name: str, feature_set: str | None = None) -> ServedUseCase:
    """The use case served under ``served_name`` and the feature set its model takes, for the
    components beside a predictor that never load the model (the explainer): ``feature_set``
    by name, else the set of the use case's first declared source."""
    cases = [uc for uc in load_use_cases().values() if uc.served_as == served_name]
    if not cases:
        known = ", ".join(uc.served_as for uc in load_use_cases().values())
        raise LookupError(f"no use case is served as {served_name!r}; served names: {known}")
    use_case = cases[0]
    if feature_set is not None:
        fs = feature_set_named(feature_set)
        if fs is None:
            raise LookupError(f"no feature set {feature_set!r} is installed in this release")
    else:
        fs = primary_feature_set(use_case)
    return ServedUseCase(served_inputs(fs), use_case)


def served_name_of(model: str, ref: str) -> str:
    """The name a registered version is served under: its use case's (the registry tag)."""
    from hospital_mlops.governance import registry

    version = registry.resolve(registry.client(), model, ref)
    return use_case_of({}, dict(version.tags)).served_as
