"""Which objects serve a registered model, by name, and which kustomize tree its stages build on.

The first use case's model owns the namespace's stage overlays (kustomize/overlays/), whose
objects carry its names. Every further use case's model is served by the same image under its
use case's served name, from its own directory ``kustomize/use-cases/<served name>/model``
(its InferenceService, drift detector, Triggers, service accounts): its stages are rendered
from there and touch nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

USE_CASES_DIR = "use-cases"


class UnknownDeployedModel(ValueError):
    """The model is no use case's, or its use case has no kustomize directory."""


@dataclass(frozen=True)
class ServedObjects:
    model: str
    use_case: str
    service: str  # the InferenceService's name, which is also the served name
    detector: str
    # kustomize-relative directory of the model's own objects; None: the namespace's overlays
    model_dir: str | None

    @property
    def shadow_service(self) -> str:
        return f"{self.service}-shadow"

    @property
    def owns_the_namespace(self) -> bool:
        return self.model_dir is None


def detector_name(service: str) -> str:
    return f"{service}-drift-detector"


def served_objects(model: str, kustomize_root: Path, *, first_service: str) -> ServedObjects:
    """The names and tree of ``model``'s serving objects; raises ``UnknownDeployedModel``
    naming what is missing. ``first_service`` is the name the namespace's overlays give the
    first use case's InferenceService."""
    from hospital_mlops.governance.config import use_cases_by_model
    from hospital_mlops.use_case import load_use_case

    by_model = use_cases_by_model()
    case = by_model.get(model)
    if case is None:
        raise UnknownDeployedModel(
            f"model {model!r}: no use case in config/use_case.yaml registers it; registered: "
            f"{', '.join(sorted(by_model))}"
        )
    if case.id == load_use_case().id:
        return ServedObjects(model, case.id, first_service, detector_name(first_service), None)
    service = case.served_as
    model_dir = f"{USE_CASES_DIR}/{service}/model"
    if not (kustomize_root / model_dir / "kustomization.yaml").is_file():
        raise UnknownDeployedModel(
            f"model {model!r}: its use case {case.id} has no kustomize directory "
            f"{model_dir} under {kustomize_root} (its objects, named {service!r}; "
            "docs/adding-a-use-case.md)"
        )
    return ServedObjects(model, case.id, service, detector_name(service), model_dir)


@dataclass(frozen=True)
class BoundUseCase:
    """A further use case the namespace serves: its id (the CDS service's key) and served name."""

    use_case: str
    service: str

    @property
    def bindings_dir(self) -> str:
        """Its Component of patches into the namespace's shared objects."""
        return f"{USE_CASES_DIR}/{self.service}"


def bound_use_cases(kustomize_root: Path) -> list[BoundUseCase]:
    """Every further use case (config/use_case.yaml order) with a kustomize directory of its
    own: the hospital's declaration that the namespace serves it."""
    from hospital_mlops.use_case import load_use_cases

    further = list(load_use_cases().values())[1:]
    return [
        BoundUseCase(case.id, case.served_as)
        for case in further
        if (kustomize_root / USE_CASES_DIR / case.served_as / "kustomization.yaml").is_file()
        and (kustomize_root / USE_CASES_DIR / case.served_as / "model").is_dir()
    ]


def shadow_trigger(service: str, broker: str) -> dict[str, Any]:
    """The Trigger that feeds ``service``'s shadow a copy of its clients' requests, before the
    shadow stage's ``-shadow`` suffix: kustomize/overlays/shadow/trigger.yaml for any model (a
    test holds the two equal for the first one). The subscriber and uri are Knative's and
    KServe's names, which kustomize does not rename."""
    return {
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {
            "name": f"{service}-requests",
            "labels": {"app.kubernetes.io/part-of": "hospital-mlops"},
        },
        "spec": {
            "broker": broker,
            "filter": {
                "attributes": {
                    "type": "org.kubeflow.serving.inference.request",  # KServe's logger
                    "inferenceservicename": service,
                    "metadata": "{}",
                }
            },
            "subscriber": {
                "ref": {
                    "apiVersion": "serving.knative.dev/v1",
                    "kind": "Service",
                    "name": f"{service}-shadow-predictor",
                },
                "uri": f"/v1/models/{service}:predict",
            },
            "delivery": {"retry": 0},
        },
    }
