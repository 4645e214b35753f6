"""The PHI scan matches whole identifier tokens: a leaked identifier is found however it is
written, and digits that only look like one (the fraction of a timing) are not."""

from __future__ import annotations

from pathlib import Path

from hospital_mlops.governance.phi_scan import scan, scan_texts

IDS = {"999999999", "MRN0042731"}


def test_an_identifier_is_found_however_it_is_written() -> None:
    texts = {
        "plain": "encounter 999999999 scored",
        "float": "encounter_id=999999999.0",  # an ID column read as floats
        "path": "out/999999999/report.html",
        "json": '{"mrn": "MRN0042731"}',
        "csv": "999999999,0.52,high",
    }
    found = dict(scan_texts(texts, IDS))
    assert set(found) == set(texts), found


def test_the_fraction_of_a_number_is_not_an_identifier(tmp_path: Path) -> None:
    log = tmp_path / "predictor.log"
    log.write_text("kserve.trace requestId: a, predict_ms: 7.999999999, postprocess_ms: 0.01\n")
    assert scan(tmp_path, IDS) == []
    assert scan_texts({"longer": "x999999999 and 1439999999997"}, IDS) == []


def test_a_database_is_scanned_table_by_table_on_either_backend(store_url: str) -> None:
    """The prediction log on PostgreSQL (a cluster) is read like the SQLite file: an identifier
    in a logged request is found and placed; the password never appears in the place."""
    from hospital_mlops.governance.phi_scan import scan_database
    from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, records

    log = PredictionLog(store_url)
    served = ServedModel("m", 1, "a" * 64, "fs", "b" * 64, "src")
    clean = {"prediction_id": "p1", "scored_at": "2026-01-01T00:00:00Z", "risk": 0.1}
    log.write(records("r1", "v1", served, [{"age": "[70-80)"}], [clean]))
    assert scan_database(store_url, IDS) == []
    leaked = {**clean, "prediction_id": "p2"}
    log.write(records("r2", "v1", served, [{"note": "seen 999999999 today"}], [leaked]))
    hits = scan_database(store_url, IDS)
    assert [(h.where.rsplit(":", 1)[-1], h.value) for h in hits] == [
        ("predictions.inputs", "999999999")
    ]
    assert "***" in hits[0].where or store_url.startswith("sqlite")
    log.close()
