"""The model card and the 31 HTI-1 source attributes: filled from evidence, never invented."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from hospital_mlops.features import feature_set_for
from hospital_mlops.governance import hti1, model_card
from hospital_mlops.governance.config import load_governance
from hospital_mlops.governance.evidence import MISSING, EvidenceContext
from tests.unit.test_evaluation import _evaluate, _predictions

CHAI_SECTIONS = [
    "BasicInfo",
    "ReleaseInfo",
    "ModelSummary",
    "UsesAndDirections",
    "Warnings",
    "TrustIngredients",
    "KeyMetrics",
    "Resources",
]


@pytest.fixture(scope="module")
def evaluation() -> dict:
    from hospital_mlops.use_case import load_use_case

    uc = load_use_case()
    uc = uc.model_copy(
        update={"evaluation": uc.evaluation.model_copy(update={"bootstrap_replicates": 60})}
    )
    return _evaluate(uc, _predictions(n=8000))


def _context(evaluation: dict, **governance_updates) -> EvidenceContext:
    from hospital_mlops.use_case import load_use_case

    governance = load_governance().model_copy(update=governance_updates)
    period = {"start": 0, "end": 100, "rows": 8000, "patients": 4000, "events": 900}
    return EvidenceContext(
        source="diabetes130",
        run_id="run-test",
        use_case=load_use_case(),
        governance=governance,
        feature_set=feature_set_for("diabetes130"),
        training={
            "created_at": "2026-11-28T00:00:00+00:00",
            "model_sha256": "a" * 64,
            "features_sha256": "b" * 64,
            "feature_set_version": "readmission_diabetes130@x",
            "params": {"objective": "binary:logistic", "max_depth": 4},
            "best_iteration": 99,
            "embargoed_rows": 10,
            "split": [
                {"period": p, **period, "event_rate": 0.11} for p in ("train", "validation", "test")
            ],
            "representativeness": {"race": {"train": {"A": 0.7, "B": 0.3}}},
        },
        evaluation=evaluation,
        gates={"passed": True, "gates": []},
        code_version={"git_sha": "abc", "dirty": False},
    )


def test_all_31_attributes_in_order_with_human_fields_missing(evaluation) -> None:
    attributes = hti1.source_attributes(_context(evaluation))
    rows = attributes["attributes"]
    assert [r["number"] for r in rows] == list(range(1, 32))
    assert len({r["attribute"] for r in rows}) == 31
    missing = set(attributes["missing"])
    # human-only facts that the bundled governance.yaml leaves empty are reported, not invented
    assert {1, 2, 14, 17, 18, 19, 20, 23, 24, 25, 26, 27, 28, 29, 30, 31} == missing
    by_number = {r["number"]: r for r in rows}
    assert "AUROC" in by_number[21]["value"] and "95% CI" in by_number[21]["value"]
    inputs = by_number[12]["value"]
    assert "race: used (feature `race`)" in inputs and "ethnicity: not used" in inputs
    assert "sex: used (feature `sex_male`)" in inputs and "date of birth (used only" in inputs
    assert "date of birth: not used" not in inputs and "language: not used" in inputs
    assert by_number[8]["value"] == "informs"
    assert all(by_number[n]["value"].startswith(MISSING) for n in missing)


def test_filled_governance_fields_fill_their_attributes(evaluation) -> None:
    governance = load_governance()
    ctx = _context(
        evaluation,
        developer=governance.developer.model_copy(
            update={"contact": "clinical-ai@hospital.example", "funding_source": "Hospital IT"}
        ),
    )
    attributes = hti1.source_attributes(ctx)
    assert 1 not in attributes["missing"] and 2 not in attributes["missing"]
    assert "clinical-ai@hospital.example" in attributes["attributes"][0]["value"]


def test_model_card_has_the_chai_sections_and_valid_xml(evaluation) -> None:
    ctx = _context(evaluation)
    document = model_card.card(ctx)
    assert list(document) == CHAI_SECTIONS
    assert "BasicInfo.DeveloperContact" in model_card.missing_fields(document)
    results = document["KeyMetrics"]["UsefulnessUsabilityEfficacy"]["Results"]
    auroc = json.loads(results[0]["ValueJson"])
    assert auroc["kind"] == "estimate_ci" and auroc["lower"] < auroc["estimate"] < auroc["upper"]
    root = ET.fromstring(model_card.card_xml(document).split("\n", 1)[1])
    assert root.tag == f"{{{model_card.CHAI_NAMESPACE}}}AppliedModelCard"
    assert [child.tag.split("}")[1] for child in root] == CHAI_SECTIONS
    page = model_card.card_html(document, hti1.source_attributes(ctx))
    assert "<script" not in page and "http" not in page.replace(model_card.CHAI_NAMESPACE, "")
    assert page.count("<tr><td>") == 31
