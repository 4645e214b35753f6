"""HMAC key rotation: the keyring, a crosswalk that agrees with normalize under both keys, the
prediction log rekeyed in one transaction, outcomes that join across the rotation, and the CDS
service finding pre-rotation scores while the rotation is under way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from hospital_mlops.cli.main import main
from hospital_mlops.data.catalog import Catalog
from hospital_mlops.data.lineage import LineageStore
from hospital_mlops.data.normalize import (
    FINGERPRINT,
    HmacKey,
    HmacKeyring,
    MissingHmacKey,
    load_hmac_keyring,
    normalize_extract,
    token_function,
)
from hospital_mlops.data.snapshots import read_tables
from hospital_mlops.inference.prediction_log import PredictionLog, ServedModel, predictions, records
from hospital_mlops.monitoring.outcomes import OutcomesRejected, ingest_outcomes
from hospital_mlops.security import key_rotation
from hospital_mlops.security.key_rotation import (
    KeyRotationError,
    build_crosswalk,
    find_crosswalk,
    read_crosswalk,
    rekey_prediction_log,
    write_crosswalk,
)
from hospital_mlops.steps.data import RunContext, ingest
from tests.conftest import TEST_KEY

SOURCE = "synthetic"
OLD = HmacKey(TEST_KEY.encode(), False)
NEW_SECRET = "rotated-key-2026-11-fedcba9876543210fedcba98765432"
NEW = HmacKey(NEW_SECRET.encode(), False)
ENC = "encounter_token"


def _env(**values: str) -> dict[str, str]:
    return {"HMLOPS_HMAC_KEY": NEW_SECRET, **values}


def test_the_keyring_holds_the_current_key_and_the_ones_being_retired(tmp_path: Path) -> None:
    assert load_hmac_keyring(_env()) == HmacKeyring(NEW, ())
    ring = load_hmac_keyring(_env(HMLOPS_HMAC_PREVIOUS_KEY=TEST_KEY))
    assert ring.previous == (OLD,) and ring.by_id(OLD.key_id) == OLD
    keys = tmp_path / "previous"
    keys.write_text(f"{TEST_KEY}\n\n{'an-older-key-' * 4}\n")
    ring = load_hmac_keyring(_env(HMLOPS_HMAC_PREVIOUS_KEY_FILE=str(keys)))
    assert [k.key_id for k in ring.previous] == [
        OLD.key_id,
        HmacKey(b"an-older-key-" * 4, False).key_id,
    ]
    with pytest.raises(MissingHmacKey, match="is the current key"):
        load_hmac_keyring(_env(HMLOPS_HMAC_PREVIOUS_KEY=NEW_SECRET))
    with pytest.raises(MissingHmacKey, match="previous HMAC key #1 is 5 bytes"):
        load_hmac_keyring(_env(HMLOPS_HMAC_PREVIOUS_KEY="short"))
    with pytest.raises(MissingHmacKey, match="cannot read"):
        load_hmac_keyring(_env(HMLOPS_HMAC_PREVIOUS_KEY_FILE=str(tmp_path / "nope")))
    with pytest.raises(MissingHmacKey, match="no key with id 0123"):
        ring.by_id("0123")


@pytest.fixture(scope="module")
def rotated(catalog: Catalog, synthetic_small: Path, tmp_path_factory) -> dict[str, Any]:
    """A raw snapshot made by the real ingest step, and the crosswalk from it."""
    store = tmp_path_factory.mktemp("store")
    ctx = RunContext(SOURCE, "platform_testing", store, "rotation-test")
    raw_manifest, gate = ingest(ctx, synthetic_small)
    assert gate.success
    crosswalk = write_crosswalk(
        build_crosswalk(store, SOURCE, catalog.source(SOURCE), OLD, NEW), store, SOURCE
    )
    return {"store": store, "raw": raw_manifest, "crosswalk": crosswalk}


def test_the_crosswalk_agrees_with_normalize_under_both_keys(catalog, rotated) -> None:
    spec = catalog.source(SOURCE)
    raw = read_tables(Path(rotated["raw"]["path"]))
    before, _ = normalize_extract(raw, spec, OLD)
    after, _ = normalize_extract(raw, spec, NEW)
    crosswalk = rotated["crosswalk"]
    checked = 0
    for tname, table in before.items():
        token_columns = [c for c in table.columns if c.endswith("_token") or c == FINGERPRINT]
        for column in token_columns:
            mapping = crosswalk.mapping(column)
            pairs = pd.DataFrame({"old": table[column], "new": after[tname][column]}).dropna()
            assert len(pairs), (tname, column)
            assert pairs["old"].map(mapping).tolist() == pairs["new"].tolist(), (tname, column)
            checked += 1
    assert checked >= 4  # encounter, patient and fingerprint tokens, across tables
    assert {ENC, FINGERPRINT} <= set(crosswalk.pairs["namespace"])


def test_the_crosswalk_holds_no_raw_identifier_and_is_in_lineage(catalog, rotated) -> None:
    spec = catalog.source(SOURCE)
    raw = read_tables(Path(rotated["raw"]["path"]))
    identifiers = {
        str(v)
        for tname, table in spec.tables.items()
        for col, cspec in table.columns.items()
        if cspec.identifier == "direct" and tname in raw
        for v in raw[tname][col].dropna().unique()
    }
    assert len(identifiers) > 1000
    crosswalk = rotated["crosswalk"]
    stored = read_tables(crosswalk.path)["crosswalk"]
    assert list(stored.columns) == ["namespace", "old_token", "new_token"]
    assert identifiers.isdisjoint(set(stored["old_token"]) | set(stored["new_token"]))
    # immutable, content-addressed, and its lineage reaches the source extract
    assert crosswalk.path.parent.name == "crosswalks"
    assert read_crosswalk(crosswalk.path).pairs.equals(stored)
    chain = LineageStore(rotated["store"]).chain(crosswalk.path.name)
    kinds = [node["kind"] for _, node in chain]
    assert kinds[:1] == ["token_crosswalk"] and "raw" in kinds and kinds[-1] == "source_extract"
    node = chain[0][1]
    assert (node["old_hmac_key_id"], node["new_hmac_key_id"]) == (OLD.key_id, NEW.key_id)


def test_a_crosswalk_needs_two_keys_and_a_raw_snapshot(catalog, tmp_path: Path) -> None:
    spec = catalog.source(SOURCE)
    with pytest.raises(KeyRotationError, match="same key"):
        build_crosswalk(tmp_path, SOURCE, spec, OLD, OLD)
    with pytest.raises(KeyRotationError, match="no raw snapshot"):
        build_crosswalk(tmp_path, SOURCE, spec, OLD, NEW)
    with pytest.raises(KeyRotationError, match="no crosswalk from key"):
        find_crosswalk(tmp_path, OLD.key_id, NEW.key_id)
    broken = tmp_path / "raw" / ("ab" * 32)
    broken.mkdir(parents=True)  # a raw snapshot without its manifest
    with pytest.raises(KeyRotationError, match="no readable manifest"):
        build_crosswalk(tmp_path, SOURCE, spec, OLD, NEW)


def test_an_altered_raw_snapshot_stops_the_crosswalk(catalog, rotated, tmp_path) -> None:
    import shutil

    store = tmp_path / "store"
    raw = Path(rotated["raw"]["path"])
    copy = shutil.copytree(raw, store / "raw" / raw.name)
    table = next((copy / "tables").glob("*.parquet"))
    table.chmod(0o644)
    table.write_bytes(table.read_bytes() + b"x")
    with pytest.raises(KeyRotationError, match=r"altered after writing.*no crosswalk was written"):
        build_crosswalk(store, SOURCE, catalog.source(SOURCE), OLD, NEW)
    assert not (store / "crosswalks").exists()


def _token(key: HmacKey, value: str) -> str:
    return str(token_function(key, ENC)(np.array([value], dtype=object))[0])


def _log_predictions(log: PredictionLog, tokens: list[str]) -> None:
    served = ServedModel("readmission-30d", 1, "a" * 64, "fs-1", "b" * 64, SOURCE)
    instances = [{"encounter_token": t, "age_years": 70} for t in tokens]
    answers = [
        {"prediction_id": f"00000000-0000-4000-8000-{n:012d}", "scored_at": "2026-11-28T10:00:00Z",
         "risk": 0.2, "alert": False, "band": "low"}
        for n, _ in enumerate(tokens)
    ]  # fmt: skip
    log.write(records("req-1", "v1", served, instances, answers))


def test_the_prediction_log_is_rekeyed_and_outcomes_join_across_the_rotation(
    rotated, store_url: str
) -> None:
    crosswalk = rotated["crosswalk"]
    old_tokens = list(crosswalk.mapping(ENC))[:5]
    new_tokens = [crosswalk.mapping(ENC)[t] for t in old_tokens]
    stranger = "f" * 32  # a token no crosswalk knows
    log = PredictionLog(store_url)
    _log_predictions(log, [*old_tokens, stranger])
    # an outcome that arrived before the rotation, under the old key
    ingest_outcomes(log, pd.DataFrame({ENC: old_tokens[:1], "readmitted_30d": [1]}), "c" * 64)
    # after the rotation the outcomes come with the new key's tokens: they join nothing yet
    later = pd.DataFrame({ENC: new_tokens[1:], "readmitted_30d": [0, 1, 0, 1]})
    with pytest.raises(OutcomesRejected, match="4 outcome"):
        ingest_outcomes(log, later, "d" * 64)

    done = rekey_prediction_log(log.engine, crosswalk)
    assert done.as_dict() == {"predictions": 5, "outcomes": 1, "already_current": 0, "unknown": 1}
    with log.engine.connect() as conn:
        rows = conn.execute(sa.select(predictions.c.encounter_token, predictions.c.inputs)).all()
        outcomes = conn.execute(sa.text("select encounter_token from outcomes")).scalars().all()
        rekeys = conn.execute(sa.text("select * from token_rekeys")).mappings().all()
    assert sorted(t for t, _ in rows) == sorted([*new_tokens, stranger])
    assert all(json.loads(inputs)[ENC] == token for token, inputs in rows)
    assert not set(old_tokens) & {t for t, _ in rows} and outcomes == new_tokens[:1]
    assert len(rekeys) == 1 and rekeys[0]["old_hmac_key_id"] == OLD.key_id
    # now the new key's outcomes join the predictions made before the rotation
    joined = ingest_outcomes(log, later, "d" * 64)
    assert (joined.new, joined.predictions_joined) == (4, 4)
    # a second run changes nothing and says so
    again = rekey_prediction_log(log.engine, crosswalk)
    assert again.as_dict() == {"predictions": 0, "outcomes": 0, "already_current": 5, "unknown": 1}


def test_a_contradicting_outcome_stops_the_rekey_and_changes_nothing(rotated, store_url) -> None:
    crosswalk = rotated["crosswalk"]
    old = next(iter(crosswalk.mapping(ENC)))
    new = crosswalk.mapping(ENC)[old]
    log = PredictionLog(store_url)
    _log_predictions(log, [old, new])
    ingest_outcomes(log, pd.DataFrame({ENC: [old, new], "readmitted_30d": [1, 0]}), "c" * 64)
    with pytest.raises(KeyRotationError, match="contradicts"):
        rekey_prediction_log(log.engine, crosswalk)
    with log.engine.connect() as conn:
        tokens = conn.execute(sa.select(predictions.c.encounter_token)).scalars().all()
    assert sorted(tokens) == sorted([old, new])  # the transaction rolled back


def test_during_a_rotation_the_cds_fallback_finds_the_pre_rotation_score(store_url) -> None:
    from hospital_mlops.ehr.cds_config import load_cds_config
    from hospital_mlops.ehr.fhir_mapping import load_fhir_mapping
    from hospital_mlops.inference.fallback import load_fallback_policy
    from serving.cds_service import CdsService
    from serving.predictor_client import PredictorClient

    log = PredictionLog(store_url)
    _log_predictions(log, [_token(OLD, "enc-123")])

    def service(keyring: HmacKeyring) -> CdsService:
        return CdsService(
            config=load_cds_config(),
            mapping=load_fhir_mapping(),
            fallback=load_fallback_policy(),
            predictor=PredictorClient("127.0.0.1:9", "readmission", 1.0),
            prediction_log=log,
            keyring=keyring,
        )

    rotating = service(HmacKeyring(NEW, (OLD,)))
    instance = {ENC: rotating.encounter_token("enc-123")}
    assert instance[ENC] == _token(NEW, "enc-123")  # new tokens are made with the new key
    cached = rotating.cached_lookup("enc-123")(instance)
    assert cached is not None and cached.risk == pytest.approx(0.2)
    # without the previous key the same encounter's earlier score is out of reach
    assert service(HmacKeyring(NEW)).cached_lookup("enc-123")(instance) is None


def test_the_keys_command_shows_ids_never_keys(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("HMLOPS_HMAC_KEY", NEW_SECRET)
    monkeypatch.setenv("HMLOPS_HMAC_PREVIOUS_KEY", TEST_KEY)
    assert main(["keys", "show", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"current": NEW.key_id, "previous": [OLD.key_id]}
    assert NEW_SECRET not in out and TEST_KEY not in out
    monkeypatch.delenv("HMLOPS_HMAC_PREVIOUS_KEY")
    assert main(["keys", "crosswalk", "--out", str(tmp_path)]) == 2
    assert "HMLOPS_HMAC_PREVIOUS_KEY" in capsys.readouterr().err


def test_the_rotation_commands_end_to_end(rotated, monkeypatch, capsys, new_store_url) -> None:
    store, crosswalk = rotated["store"], rotated["crosswalk"]
    old_token = next(iter(crosswalk.mapping(ENC)))
    url = new_store_url("log")
    _log_predictions(PredictionLog(url), [old_token])
    monkeypatch.setenv("HMLOPS_HMAC_KEY", NEW_SECRET)
    monkeypatch.setenv("HMLOPS_HMAC_PREVIOUS_KEY", TEST_KEY)
    empty = new_store_url("shadow")  # a log nothing was written to yet
    argv = ["keys", "rekey", "--out", str(store), "--log-url", url, "--log-url", empty, "--json"]
    assert main(argv) == 0
    logs = json.loads(capsys.readouterr().out)["logs"]
    assert [c["predictions"] for c in logs.values()] == [1, 0]
    assert main(["keys", "translate", old_token, "--out", str(store),
                 "--from-key-id", OLD.key_id, "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out) == {old_token: crosswalk.mapping(ENC)[old_token]}
    assert key_rotation.raw_snapshots(store, SOURCE) == [Path(rotated["raw"]["path"])]
