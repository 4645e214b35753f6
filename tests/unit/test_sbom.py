"""`hmlops sbom`: a CycloneDX 1.6 SBOM of the environment, schema-validated before it is
written, with licences read the way the licence inventory reads them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hospital_mlops.cli.main import run_captured
from hospital_mlops.governance.sbom import SbomInvalid, validate_sbom, write_sbom


@pytest.fixture(scope="module")
def sbom(tmp_path_factory) -> tuple[dict, dict]:
    path = tmp_path_factory.mktemp("sbom") / "sbom.cdx.json"
    summary = write_sbom(path)
    return summary, json.loads(path.read_text())


def test_every_installed_distribution_is_a_component_with_its_purl(sbom) -> None:
    from importlib.metadata import distributions

    summary, doc = sbom
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    names = {c["name"].lower() for c in doc["components"]}
    installed = {str(d.metadata["Name"]).lower() for d in distributions()} - {"hospital-mlops"}
    assert names == installed and summary["components"] == len(installed)
    for c in doc["components"]:
        assert c["purl"].startswith("pkg:pypi/") and c["purl"].endswith(f"@{c['version']}")
    assert doc["metadata"]["component"]["name"] == "hospital-mlops"


def test_alibi_is_flagged_as_business_source_licensed(sbom) -> None:
    summary, doc = sbom
    by_name = {c["name"]: c for c in doc["components"]}
    for name in ("alibi", "alibi-detect"):
        assert by_name[name]["licenses"] == [{"license": {"id": "BUSL-1.1"}}]
        assert name in summary["not_osi_approved"]
    assert "numpy" not in summary["not_osi_approved"]


def test_the_dependency_graph_starts_at_the_project(sbom) -> None:
    _, doc = sbom
    graph = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    direct = {ref.split("@")[0] for ref in graph["hospital-mlops"]}
    # the core and both images' extras
    assert {"pkg:pypi/numpy", "pkg:pypi/kserve", "pkg:pypi/mlflow", "pkg:pypi/kfp"} <= direct
    kserve = next(ref for ref in graph if ref.startswith("pkg:pypi/kserve@"))
    assert any(ref.startswith("pkg:pypi/fastapi@") for ref in graph[kserve])


def test_a_document_that_breaks_the_schema_is_refused(sbom, tmp_path: Path) -> None:
    _, doc = sbom
    validate_sbom(json.dumps(doc))
    for breakage in (
        lambda d: d["components"][0].update(type="spaceship"),
        lambda d: d.pop("specVersion"),
        lambda d: d["components"][0].update(unexpected="field"),
    ):
        broken = json.loads(json.dumps(doc))
        breakage(broken)
        with pytest.raises(SbomInvalid, match=r"CycloneDX 1\.6"):
            validate_sbom(json.dumps(broken))


def test_the_cli_writes_it_and_names_the_non_osi_licences(tmp_path: Path) -> None:
    out = tmp_path / "sbom.cdx.json"
    code, stdout, _ = run_captured(["sbom", "--out", str(out)])
    assert code == 0 and out.exists()
    assert "alibi, alibi-detect" in stdout and "schema-validated" in stdout
