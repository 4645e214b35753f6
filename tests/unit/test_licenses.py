from __future__ import annotations

import csv
import json
from email.message import Message
from importlib.metadata import Distribution

from hospital_mlops.cli.main import main
from hospital_mlops.governance.licenses import classify, inventory, write_inventory


class _Dist(Distribution):
    """A distribution whose metadata we write, to exercise each rule on its own."""

    def __init__(self, **fields: object) -> None:
        self._meta = Message()
        self._meta["Name"] = "pkg"
        self._meta["Version"] = "1.0"
        for key, value in fields.items():
            for item in value if isinstance(value, list) else [value]:
                self._meta[key.replace("_", "-")] = str(item)

    def read_text(self, filename: str) -> str | None:
        return self._meta.as_string() if filename in ("METADATA", "PKG-INFO") else None

    def locate_file(self, path):  # pragma: no cover - unused
        raise NotImplementedError


def test_each_metadata_rule() -> None:
    assert classify(_Dist(License_Expression="MIT OR Apache-2.0")).osi_approved is True
    assert classify(_Dist(License_Expression="MIT AND LicenseRef-Custom")).osi_approved is False
    osi = classify(_Dist(Classifier=["License :: OSI Approved :: BSD License"]))
    assert osi.osi_approved and osi.evidence == "trove classifier" and osi.flag == ""
    bsl = classify(_Dist(License="Business Source License 1.1"))
    assert bsl.osi_approved is False and bsl.flag == "not OSI-approved"
    assert classify(_Dist(License="3-Clause BSD License")).osi_approved is True
    unknown = classify(_Dist())
    assert unknown.osi_approved is None and unknown.flag == "unknown: review"


def test_the_installed_set_flags_alibi_and_passes_numpy(tmp_path) -> None:
    records = {r.name.lower(): r for r in inventory()}
    assert records["alibi"].flag == "not OSI-approved"
    assert records["alibi-detect"].flag == "not OSI-approved"
    assert records["numpy"].osi_approved and records["xgboost-cpu"].osi_approved
    out = write_inventory(list(records.values()), tmp_path / "licences.json")
    assert {r["name"] for r in json.loads(out.read_text())} >= {"alibi", "numpy"}


def test_the_command_writes_the_inventory(tmp_path, capsys) -> None:
    out = tmp_path / "licences.csv"
    assert main(["licenses", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert any(r["name"] == "alibi" and r["flag"] == "not OSI-approved" for r in rows)
    assert "alibi 0.9.6: Business Source License 1.1" in capsys.readouterr().out
