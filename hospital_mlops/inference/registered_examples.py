"""Real example requests for a registered version: encounters from its own test period.

Apart from ``model.example_requests`` because it reads the registry, which sits above the model
room."""

from __future__ import annotations

from typing import Any

from hospital_mlops.governance import registry
from hospital_mlops.model.example_requests import example_instances, test_period


def registered_examples(model: str, ref: str, n: int = 5, seed: int = 7) -> list[dict[str, Any]]:
    """Real encounters from the test period of a registered version (``NAME``, ``REF``)."""
    version = registry.resolve(registry.client(), model, ref)
    return example_instances(test_period(registry.training_record(version)), n, seed)
