"""``hmlops governance fhir``: a registered version's model card as FHIR R4 following HL7's AI
Transparency on FHIR IG (STU1), valid against the FHIR R4 JSON schema, made only of what the
registry vouches for, and the same Bundle served by the CDS service its cards link (issue 23)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hospital_mlops import artifacts
from hospital_mlops.cli.main import run_captured
from hospital_mlops.governance import fhir_model_card
from hospital_mlops.governance.config import load_governance
from hospital_mlops.governance.fhir_model_card import AI_INPUTS, IG
from hospital_mlops.inference.prediction_log import PredictionLog
from serving.cds_service import create_app
from tests.fhir_schema import fhir_problems
from tests.unit.test_cds_service import _service

MODEL = "readmission-30d"


def _registered(version: int) -> tuple[dict[str, str], dict, dict]:
    from hospital_mlops.governance import registry

    mv = registry.resolve(registry.client(), MODEL, str(version))
    return json.loads(mv.tags["evidence.sha256"]), registry.training_record(mv), mv


def _bundle(version: int, tmp_path: Path) -> dict:
    out = tmp_path / "card.fhir.json"
    code, stdout, stderr = run_captured(
        ["governance", "fhir", "--model", MODEL, "--version", str(version), "--out", str(out)]
    )
    assert code == 0, stderr
    assert "AI Transparency on FHIR 1.0.0" in stdout and str(out) in stdout
    return dict(json.loads(out.read_text()))


def test_the_card_is_a_schema_valid_bundle_of_the_igs_resources(d130_champion, tmp_path) -> None:
    from hospital_mlops.governance import registry

    bundle = _bundle(d130_champion, tmp_path)
    assert fhir_problems(bundle) == []  # HL7's FHIR R4 JSON schema
    assert fhir_model_card.fhir_problems(bundle) == []  # and FHIR's own models
    assert bundle["type"] == "collection"
    by_type = {e["resource"]["resourceType"]: e for e in bundle["entry"]}
    assert set(by_type) == {"DocumentReference", "Device", "Organization", "Provenance"}
    url = {kind: entry["fullUrl"] for kind, entry in by_type.items()}
    registered, training, mv = _registered(d130_champion)

    document = by_type["DocumentReference"]["resource"]
    assert document["meta"]["profile"] == [f"{IG}/StructureDefinition/AI-ModelCard|1.0.0"]
    # the profile's type slice is closed: exactly its one coding
    assert document["type"]["coding"] == [
        {"system": AI_INPUTS, "code": "AIModelCard", "display": "AI Model-Card"}
    ]
    assert document["category"][0]["coding"][0]["code"] == "AImodelCardCHAIformat"
    kinds = [c["attachment"]["contentType"] for c in document["content"]]
    assert kinds == ["application/xml", "application/json", "text/html"]  # CHAI slice first
    for content, name in zip(
        document["content"],
        (artifacts.MODEL_CARD_XML, artifacts.MODEL_CARD_JSON, artifacts.MODEL_CARD_HTML),
        strict=True,
    ):
        attachment = content["attachment"]
        data = base64.b64decode(attachment["data"])
        assert hashlib.sha256(data).hexdigest() == registered[name]  # the registered card
        assert attachment["size"] == len(data)
        assert base64.b64decode(attachment["hash"]) == hashlib.sha1(data).digest()
    chai = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
    assert "https://mc.chai.org/v0.2/schema.xsd" in chai
    signoffs = registry.signoffs(mv)
    all_signed = all(role in signoffs for role in load_governance().required_signoffs)
    assert all_signed  # the champion was promoted, so signed by every role
    assert document["docStatus"] == "final"
    assert document["context"]["related"] == [{"reference": url["Device"]}]

    device = by_type["Device"]["resource"]
    assert device["meta"]["profile"] == [f"{IG}/StructureDefinition/AI-Device|1.0.0"]
    assert {c["code"] for c in device["type"]["coding"]} == {"Artificial-Intelligence"}
    extensions = {e["url"]: e for e in device["extension"]}
    card_link = extensions[f"{IG}/StructureDefinition/aitransparency.modelCardDescription"]
    assert card_link["valueReference"] == {"reference": url["DocumentReference"]}
    identifiers = {i["system"]: i["value"] for i in device["identifier"]}
    assert identifiers["urn:hospital-mlops:model-sha256"] == training["model_sha256"]
    assert device["version"] == [{"value": str(d130_champion)}]
    assert device["owner"] == {"reference": url["Organization"]}

    provenance = by_type["Provenance"]["resource"]
    assert provenance["target"] == [{"reference": url["DocumentReference"]}]
    verifiers = [a for a in provenance["agent"] if a["type"]["coding"][0]["code"] == "verifier"]
    assert sorted(v["who"]["display"] for v in verifiers) == sorted(
        s["by"] for s in signoffs.values()
    )
    sources = {e["what"].get("identifier", {}).get("value") for e in provenance["entity"]}
    assert set(registered.values()) <= sources  # every registered evidence file, by hash


def test_the_cds_service_serves_the_same_bundle_its_cards_link(d130_champion, tmp_path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'log.sqlite'}")
    service = _service("127.0.0.1:9", log, MODEL)  # no predictor needed for the card
    with TestClient(create_app(service)) as client:
        served = client.get(f"/model-cards/{MODEL}/{d130_champion}")
        assert served.status_code == 200, served.text
        assert served.headers["content-type"].startswith("application/fhir+json")
        unknown = client.get(f"/model-cards/{MODEL}/999")
        bad = [client.get("/model-cards/a%20b/1"), client.get(f"/model-cards/{MODEL}/{'9' * 40}")]
    expected = _bundle(d130_champion, tmp_path)
    got = served.json()
    for bundle in (got, expected):  # made at different moments
        bundle.pop("timestamp")
        for entry in bundle["entry"]:
            for stamp in ("date", "recorded"):
                entry["resource"].pop(stamp, None)
    assert got == expected
    assert unknown.status_code == 404 and unknown.json()["errors"][0]["field"] == "model_card"
    for refused in bad:  # refused by the handler itself, by name, never a 500
        assert refused.status_code == 404 and refused.json()["errors"][0]["field"] == "model_card"


def test_a_card_changed_since_registration_is_refused(d130_champion, tmp_path, monkeypatch):
    """A card file in the artifact store that no longer matches its registered hash is never
    published (the file is altered in a copy; the registry's own stays intact)."""
    from hospital_mlops.governance import registry

    real = registry.evidence_file

    def altered(run_id: str, path: str) -> Path | None:
        found = real(run_id, path)
        if found is None or not path.endswith(artifacts.MODEL_CARD_XML):
            return found
        copy = tmp_path / "model_card.xml"
        copy.write_text(found.read_text().replace("<", "< ", 1))
        return copy

    monkeypatch.setattr(registry, "evidence_file", altered)
    out = tmp_path / "card.fhir.json"
    code, _, stderr = run_captured(
        ["governance", "fhir", "--model", MODEL, "--version", str(d130_champion), "--out", str(out)]
    )
    assert code == 2 and "model_card.xml changed since registration" in stderr
    assert len(stderr.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--version", "999"], "999"),
        (["--version", "x"], "invalid int value"),
    ],
)
def test_a_bad_request_is_one_clear_line(d130_champion, tmp_path, args, message) -> None:
    out = tmp_path / "card.fhir.json"
    code, _, stderr = run_captured(
        ["governance", "fhir", "--model", MODEL, "--out", str(out), *args]
    )
    assert code == 2 and message in stderr, stderr
    assert "Traceback" not in stderr and not out.exists()
