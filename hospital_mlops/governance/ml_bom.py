"""A registered model version as a CycloneDX 1.6 ML-BOM component: the model
(``machine-learning-model``, its artifact's hash) with its ``modelCard``, whose datasets (the
feature snapshot and the split it learnt from) are named inline with their content hashes, for
``hmlops sbom --model NAME --version N``.

Everything is read from the version's own registry record: its training record (feature set,
use case, the feature snapshot's and the split's hashes, the model's hash, its parameters), its
evaluation evidence (the test period's metrics with their confidence intervals) and its use
case's declaration (users, uses, limitations, what is out of scope). cyclonedx-python-lib has no
model card type, so these are JSON objects; the whole document is validated against the
CycloneDX 1.6 schema before it is written (sbom.py).
"""

from __future__ import annotations

from typing import Any

from hospital_mlops import artifacts


class ModelNotRegistered(LookupError):
    """The registered version lacks the evidence an ML-BOM is made of."""


def _metric(kind: str, value: dict[str, Any], slice_: str) -> dict[str, Any]:
    metric: dict[str, Any] = {"type": kind, "value": str(value["value"]), "slice": slice_}
    ci = value.get("ci") or [None, None]
    if ci[0] is not None:
        metric["confidenceInterval"] = {"lowerBound": str(ci[0]), "upperBound": str(ci[1])}
    return metric


def _dataset(name: str, sha256: str, description: str) -> dict[str, Any]:
    """A dataset of the model card, inline (as checkers such as sbomaudit's parser read them),
    identified by its content hash."""
    return {
        "type": "dataset",
        "name": name,
        "description": description,
        "classification": "de-identified (tokenized identifiers)",
        "contents": {"properties": [{"name": "sha256", "value": sha256}]},
    }


def model_components(
    model: str, version: int, supplier: str
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's component and its dependency entry."""
    import json

    from hospital_mlops.governance import registry
    from hospital_mlops.use_case import load_use_case

    mv = registry.resolve(registry.client(), model, str(version))  # refuses an unknown one
    training = registry.training_record(mv)
    evaluation_path = registry.evidence_file(mv.run_id, artifacts.evidence(artifacts.EVALUATION))
    if evaluation_path is None:
        raise ModelNotRegistered(f"{model} version {version} has no evaluation evidence")
    evaluation = json.loads(evaluation_path.read_text())
    use_case = load_use_case(use_case=training.get("use_case") or None)
    feature_set = str(training["feature_set_version"])
    test = next(p for p in training["split"] if p["period"] == "test")
    slice_ = f"temporal test period ({test['start']} … {test['end']}, {test['rows']} encounters)"
    ref = f"model:{model}@{version}"
    discrimination, calibration = evaluation["discrimination"], evaluation["calibration"]
    subgroups = use_case.for_source(feature_set_source(feature_set)).subgroups
    primary = evaluation["thresholds"][evaluation["primary_threshold"]]
    flags = evaluation.get("subgroup_flags") or []
    component = {
        "type": "machine-learning-model",
        "bom-ref": ref,
        "name": model,
        "version": str(version),
        "supplier": {"name": supplier},
        "description": use_case.title,
        "hashes": [{"alg": "SHA-256", "content": training["model_sha256"]}],
        "properties": [
            {"name": "hospital-mlops:use-case", "value": use_case.id},
            {"name": "hospital-mlops:feature-set", "value": feature_set},
            {"name": "hospital-mlops:mlflow-run", "value": mv.run_id},
            {"name": "hospital-mlops:prediction-time", "value": use_case.prediction_time},
        ],
        "modelCard": {
            "bom-ref": f"{ref}#card",
            "modelParameters": {
                "approach": {"type": "supervised"},
                "task": "binary classification (calibrated risk)",
                "architectureFamily": "gradient-boosted decision trees",
                "modelArchitecture": "XGBoost, logistic recalibration on the validation period",
                "datasets": [
                    _dataset(
                        f"{feature_set} feature snapshot",
                        training["features_sha256"],
                        "the published, content-hashed feature snapshot it was trained on",
                    ),
                    _dataset(
                        f"{feature_set} temporal split",
                        training["split_sha256"],
                        "the train, validation and test periods cut from that snapshot",
                    ),
                ],
                "inputs": [{"format": "tabular: the feature set's served inputs"}],
                "outputs": [{"format": "probability of the label, with reasons"}],
            },
            "quantitativeAnalysis": {
                "performanceMetrics": [
                    _metric("AUROC", discrimination["auroc"], slice_),
                    _metric("AUPRC", discrimination["auprc"], slice_),
                    _metric("calibration slope", calibration["slope"], slice_),
                    _metric("expected calibration error", calibration["ece"], slice_),
                    _metric(
                        f"sensitivity at the {evaluation['primary_threshold']} threshold",
                        primary["sensitivity"],
                        slice_,
                    ),
                ]
            },
            "considerations": {
                "users": list(use_case.intended_users),
                "useCases": [use_case.intended_use],
                "technicalLimitations": [*use_case.limitations, *use_case.out_of_scope],
                "ethicalConsiderations": [
                    {
                        "name": "subgroup performance",
                        "mitigationStrategy": (
                            "subgroups flagged on the test period, each with a recorded "
                            f"justification: {', '.join(flags) if flags else 'none flagged'}"
                        ),
                    }
                ],
                "fairnessAssessments": [
                    {
                        "groupAtRisk": f"{name} subgroups",
                        "benefits": "the same decision support as every patient",
                        "harms": "a miscalibrated or less discriminating risk for the group",
                        "mitigationStrategy": "per-subgroup calibration monitored in use",
                    }
                    for name in sorted(subgroups)
                ],
            },
        },
    }
    return [component], [{"ref": ref}]


def feature_set_source(feature_set_version: str) -> str:
    from hospital_mlops.features import feature_set_named

    found = feature_set_named(feature_set_version.split("@")[0])
    if found is None:
        raise ModelNotRegistered(f"feature set {feature_set_version!r} is not defined here")
    return found.source
