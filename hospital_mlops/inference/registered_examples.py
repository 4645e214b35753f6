"""Real example requests for a registered version: encounters from its own test period.

Apart from ``model.example_requests`` because it reads the registry, which sits above the model
room."""

from __future__ import annotations

from typing import Any

from hospital_mlops.governance import registry
from hospital_mlops.inference.served_model import serving_setup
from hospital_mlops.model.example_requests import test_period_instances


def registered_examples(model: str, ref: str, n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """Real encounters from the test period of a registered version (``NAME``, ``REF``), as
    requests to that version: its own feature set's inputs, whatever its use case."""
    loaded = registry.load_risk_model(model, ref)
    setup = serving_setup(loaded.model, loaded.training, loaded.tags)
    policy = setup.use_case.for_source(setup.feature_set.source).split
    return test_period_instances(setup.served, policy, n, seed)
