from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hospital_mlops.data.catalog import (
    CatalogError,
    UnknownSource,
    UseNotPermitted,
    catalog_version,
    load_catalog,
)
from hospital_mlops.paths import config_path


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _raw() -> dict:
    return yaml.safe_load(config_path("catalog.yaml").read_text())


def test_bundled_catalog_is_valid_and_complete(catalog) -> None:
    assert set(catalog.sources) == {"diabetes130", "synthetic"}
    d130 = catalog.source("diabetes130")
    assert len(d130.tables["encounters"].columns) == 50
    assert d130.timestamps.order_proxy == "encounter_id"
    for source in catalog.sources.values():
        assert source.owner and source.permissible_uses and source.retention_days > 0
        for table in source.tables.values():
            for col in table.columns.values():
                assert col.provenance in ("clinical_truth", "administrative")
    assert catalog.source("synthetic").identifier_columns("patients") == [
        "mrn",
        "patient_name",
        "birth_date",
        "zip",
    ]


def test_wrong_type_names_the_yaml_path(tmp_path: Path) -> None:
    raw = _raw()
    raw["sources"]["diabetes130"]["tables"]["encounters"]["columns"]["race"]["type"] = "colour"
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, raw))
    assert "sources.diabetes130.tables.encounters.columns.race.type" in str(err.value)


def test_unknown_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    raw = _raw()
    raw["sources"]["synthetic"]["tables"]["vitals"]["columns"]["spo2"]["units"] = "%"
    with pytest.raises(CatalogError) as err:
        load_catalog(_write(tmp_path, raw))
    assert "sources.synthetic.tables.vitals.columns.spo2.units" in str(err.value)


def test_inverted_range_and_undeclared_use_fail(tmp_path: Path) -> None:
    raw = _raw()
    raw["sources"]["synthetic"]["tables"]["vitals"]["columns"]["spo2"]["range"] = {
        "min": 100,
        "max": 50,
    }
    with pytest.raises(CatalogError, match=r"min 100\.0 is above max 50\.0"):
        load_catalog(_write(tmp_path, raw))
    raw = _raw()
    raw["sources"]["synthetic"]["permissible_uses"].append("marketing")
    with pytest.raises(CatalogError, match="undeclared uses"):
        load_catalog(_write(tmp_path, raw))


def test_malformed_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [unclosed")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope.yaml")


def test_refuses_unknown_source_and_forbidden_use(catalog) -> None:
    with pytest.raises(UnknownSource, match="not in the data catalog"):
        catalog.source("pharmacy_feed")
    with pytest.raises(UseNotPermitted, match="may not be used for 'quality_improvement'"):
        catalog.require_use("synthetic", "quality_improvement")
    assert catalog.require_use("diabetes130", "readmission_risk_model").format == "csv"


def test_catalog_version_changes_with_content(tmp_path: Path, catalog) -> None:
    raw = _raw()
    raw["sources"]["diabetes130"]["tables"]["encounters"]["columns"]["race"]["max_missing"] = 0.2
    changed = load_catalog(_write(tmp_path, raw))
    assert catalog_version(changed) != catalog_version(catalog)
    assert catalog_version(load_catalog()) == catalog_version(catalog)
