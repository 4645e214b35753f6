"""The PHI scan matches whole identifier tokens: a leaked identifier is found however it is
written, and digits that only look like one (the fraction of a timing) are not."""

from __future__ import annotations

from pathlib import Path

from hospital_mlops.phi_scan import scan, scan_texts

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
