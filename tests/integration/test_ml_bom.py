"""``hmlops sbom --model NAME --version N``: the registered version as CycloneDX 1.6 ML-BOM
components (a machine-learning-model with its modelCard, the data it learnt from by hash), in
the environment's SBOM, schema-validated, the NTIA elements intact (issue 23)."""

from __future__ import annotations

import json
from pathlib import Path

from hospital_mlops.cli.main import run_captured
from hospital_mlops.use_case import load_use_case
from tests.unit.test_sbom import _ntia

MODEL = "readmission-30d"


def _record(version: int) -> tuple[dict, dict]:
    from hospital_mlops import artifacts
    from hospital_mlops.governance import registry

    mv = registry.resolve(registry.client(), MODEL, str(version))
    evaluation = registry.evidence_file(mv.run_id, artifacts.evidence(artifacts.EVALUATION))
    assert evaluation is not None
    return registry.training_record(mv), json.loads(evaluation.read_text())


def test_the_registered_model_is_a_model_card_component(d130_champion, tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    code, stdout, stderr = run_captured(
        ["sbom", "--out", str(out), "--model", MODEL, "--version", str(d130_champion)]
    )
    assert code == 0, stderr
    assert f"{MODEL}@{d130_champion} as a machine-learning-model component" in stdout
    doc = json.loads(out.read_text())
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    model = by_ref[f"model:{MODEL}@{d130_champion}"]
    training, evaluation = _record(d130_champion)
    assert model["type"] == "machine-learning-model" and model["version"] == str(d130_champion)
    assert model["hashes"] == [{"alg": "SHA-256", "content": training["model_sha256"]}]
    card = model["modelCard"]
    datasets = card["modelParameters"]["datasets"]
    assert {d["type"] for d in datasets} == {"dataset"}
    hashes = {p["value"] for d in datasets for p in d["contents"]["properties"]}
    assert hashes == {training["features_sha256"], training["split_sha256"]}
    metrics = {m["type"]: m for m in card["quantitativeAnalysis"]["performanceMetrics"]}
    auroc = evaluation["discrimination"]["auroc"]
    assert metrics["AUROC"]["value"] == str(auroc["value"])
    assert metrics["AUROC"]["confidenceInterval"]["lowerBound"] == str(auroc["ci"][0])
    use_case = load_use_case()
    assert card["considerations"]["users"] == use_case.intended_users
    assert card["considerations"]["useCases"] == [use_case.intended_use]
    graph = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    assert model["bom-ref"] in graph["hospital-mlops"]  # the application ships it
    # the independent checker still finds every NTIA element, the model's and data's included
    verdicts = _ntia(out, tmp_path)
    failed = {k for k, v in verdicts.items() if v == "Fail" and "license" not in k.lower()}
    assert verdicts.get("NTIA conformant") == "Pass", failed


def test_a_bad_model_request_is_one_clear_line(d130_champion, tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    for argv, said in (
        (["--model", MODEL], "--model and --version go together"),
        (["--model", MODEL, "--version", "999"], "has no version 999"),
    ):
        code, _, stderr = run_captured(["sbom", "--out", str(out), *argv])
        assert code != 0 and said in stderr and "Traceback" not in stderr
        assert len(stderr.strip().splitlines()) == 1
    assert not out.exists()
