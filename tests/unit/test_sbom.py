"""`hmlops sbom`: a CycloneDX 1.6 SBOM of the environment, schema-validated before it is
written, with licences read the way the licence inventory reads them."""

from __future__ import annotations

import json
import re
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


# --- the NTIA minimum elements, checked by sbomaudit (an independent tool, .venv-tools) ---------


def _sbomaudit() -> str:
    from tests.unit.test_manifests import ROOT, require_tool

    local = ROOT / ".venv-tools" / "bin" / "sbomaudit"
    return require_tool(
        "sbomaudit",
        str(local) if local.exists() else None,
        "`make test` builds .venv-tools from requirements-tools.lock",
    )


def _ntia(path: Path, tmp_path: Path) -> dict[str, str]:
    """sbomaudit's verdicts on the NTIA items, by the text it reports."""
    import subprocess

    out = tmp_path / "audit.json"
    subprocess.run(
        [_sbomaudit(), "-i", str(path), "--offline", "--verbose", "-o", str(out)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    audit = json.loads(out.read_text())
    entries = [e for part in audit.values() if isinstance(part, list) for e in part]
    reports = [r for e in entries for r in (e.get("reports") or [e]) if "text" in r]
    # a failed check's text ends with what was missing (": MISSING", ": FAILED")
    return {re.sub(r": [A-Z]+$", "", r["text"]): r["state"] for r in reports}


def test_an_independent_checker_finds_every_ntia_minimum_element(sbom, tmp_path: Path) -> None:
    """Supplier, name, version and identifier of every component, the dependency
    relationships, the SBOM's author and its timestamp: sbomaudit's NTIA verdict passes."""
    summary, doc = sbom
    verdicts = _ntia(Path(summary["path"]), tmp_path)
    assert verdicts.get("NTIA conformant") == "Pass", {
        k: v for k, v in verdicts.items() if v == "Fail" and ("Supplier" in k or "NTIA" in k)
    }
    assert verdicts["SBOM Creator identified"] == "Pass"
    assert verdicts["SBOM Creation time defined"] == "Pass"
    for c in doc["components"]:
        assert c["supplier"]["name"] and c["supplier"]["name"] != "NOASSERTION", c["name"]
    assert summary["supplier_not_declared"] == []
    assert doc["metadata"]["authors"][0]["name"]  # governance.yaml's developer
    tools = {t["name"] for t in doc["metadata"]["tools"]["components"]}
    assert {"hospital-mlops", "cyclonedx-python-lib"} <= tools
    # every component is in the graph: depended on by something, the application at least
    depended = {ref for d in doc["dependencies"] for ref in d.get("dependsOn", [])}
    assert {c["bom-ref"] for c in doc["components"]} <= depended


def test_the_checker_fails_an_sbom_without_a_supplier(sbom, tmp_path: Path) -> None:
    """The check can fail: one component's supplier taken out, sbomaudit says non-conformant."""
    _, doc = sbom
    broken = json.loads(json.dumps(doc))
    broken["components"][0].pop("supplier")
    path = tmp_path / "broken.cdx.json"
    path.write_text(json.dumps(broken))
    verdicts = _ntia(path, tmp_path)
    assert verdicts.get("NTIA conformant") == "Fail"
    name = broken["components"][0]["name"]
    assert verdicts[f"Supplier included for package {name}"] == "Fail"


def test_a_supplier_comes_from_the_distributions_own_metadata() -> None:
    from importlib.metadata import distribution

    from hospital_mlops.governance.sbom import supplier_name

    assert supplier_name(distribution("alibi")) == "Seldon Technologies Ltd."  # its Author
    assert supplier_name(distribution("numba")) == "Anaconda, Inc."  # its licence's holder
