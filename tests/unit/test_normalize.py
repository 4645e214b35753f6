from __future__ import annotations

import pandas as pd
import pytest

from hospital_mlops.data.normalize import (
    DEMO_HMAC_KEY,
    HmacKey,
    MissingHmacKey,
    load_hmac_key,
    merge_map,
    normalize_extract,
    tokenize,
)
from hospital_mlops.data.sources.extract import read_extract

KEY = HmacKey(b"k" * 40, demo=False)


def test_key_is_required_and_must_be_long_enough(tmp_path) -> None:
    with pytest.raises(MissingHmacKey, match="--demo-key"):
        load_hmac_key({})
    with pytest.raises(MissingHmacKey, match="at least 32"):
        load_hmac_key({"HMLOPS_HMAC_KEY": "short"})
    secret = tmp_path / "key"
    secret.write_text("s" * 40 + "\n")
    from_file = load_hmac_key({"HMLOPS_HMAC_KEY_FILE": str(secret)})
    assert from_file.secret == b"s" * 40 and not from_file.demo
    with pytest.raises(MissingHmacKey, match="cannot read"):
        load_hmac_key({"HMLOPS_HMAC_KEY_FILE": str(tmp_path / "absent")})
    demo = load_hmac_key({"HMLOPS_HMAC_KEY": DEMO_HMAC_KEY})
    assert demo.demo and demo.key_id.startswith("demo-")


def test_tokens_are_keyed_namespaced_and_stable() -> None:
    values = pd.Series(["MRN1", "MRN2", "MRN1", None])
    tokens = tokenize(values, KEY, "patient_token")
    assert tokens[0] == tokens[2] and tokens[0] != tokens[1] and tokens[3] is None
    assert len(tokens[0]) == 32 and "MRN1" not in tokens[0]
    assert tokenize(values, HmacKey(b"j" * 40, False), "patient_token")[0] != tokens[0]
    assert tokenize(values, KEY, "encounter_token")[0] != tokens[0]
    assert tokenize(values, KEY, "patient_token").tolist() == tokens.tolist()


@pytest.mark.parametrize("secret", [b"k" * 40, b"x" * 64, b"long-key-" * 12])
def test_tokens_are_rfc2104_hmac_sha256(secret: bytes) -> None:
    import hmac

    values = pd.Series(["MRN1", "ENC-000042", "Ωmega"])
    expected = [
        hmac.new(secret, b"patient_token\x1f" + v.encode(), "sha256").hexdigest()[:32]
        for v in values
    ]
    assert tokenize(values, HmacKey(secret, False), "patient_token").tolist() == expected


def test_merge_chains_resolve_to_the_survivor() -> None:
    merges = pd.DataFrame({"retired_mrn": ["A", "B"], "surviving_mrn": ["B", "C"]})
    assert merge_map(merges) == {"A": "C", "B": "C"}


def test_synthetic_normalize_converts_units_ids_time_and_drops_identifiers(
    catalog, synthetic_small
) -> None:
    spec = catalog.source("synthetic")
    raw = read_extract(synthetic_small, spec)
    tables, report = normalize_extract(raw, spec, KEY)

    labs = tables["labs"]
    glucose = labs[labs["lab_code"] == "GLU"]
    assert set(glucose["unit"]) == {"mg/dL"}
    assert report.converted_units["GLU:mmol/L->mg/dL"] > 0
    assert 80 <= glucose["value"].median() <= 200

    # Every raw spelling of an encounter maps to one token shared by all tables.
    assert report.standardized_ids["encounter_id"] > 0
    assert set(tables["vitals"]["encounter_token"]) <= set(tables["encounters"]["encounter_token"])

    # Tokens are of the canonical ID, whatever the site's spelling (and however computed).
    digits = raw["encounters"]["encounter_id"].str.extract(r"(\d+)", expand=False).astype(int)
    expected = tokenize(digits.map("ENC-{:08d}".format), KEY, "encounter_token")
    assert tables["encounters"]["encounter_token"].tolist() == expected.tolist()

    # Identifiers are gone; only tokens and generalized values remain.
    for _name, df in tables.items():
        assert not {"mrn", "patient_name", "birth_date", "zip", "encounter_id"} & set(df.columns)
    raw_ids = set(raw["patients"]["mrn"]) | set(raw["encounters"]["encounter_id"].str.strip())
    for df in tables.values():
        for col in df.columns:
            if df[col].dtype == object:
                assert not raw_ids & set(df[col].dropna().astype(str)), col

    # Site wall-clock → UTC: a NORTH (New York) admission is 4-5 hours later in UTC.
    enc_raw = raw["encounters"]
    enc = tables["encounters"]
    north = enc_raw["site"] == "NORTH"
    first = enc_raw[north].index[0]
    offset = enc["admit_time"].iloc[first].tz_convert(None) - enc_raw["admit_time"].iloc[first]
    assert pd.Timedelta(hours=4) <= offset <= pd.Timedelta(hours=5)

    # EMPI merges applied: duplicate registrations collapse into one person.
    assert report.merged_mrns == len(raw["patient_merges"]) > 0
    assert tables["patients"]["person_fingerprint"].is_unique
    assert enc["age_years"].between(0, 90).all()


def test_diabetes130_keeps_order_as_a_rank_and_maps_codes(catalog, d130_small) -> None:
    spec = catalog.source("diabetes130")
    raw = read_extract(d130_small, spec)
    tables, _ = normalize_extract(raw, spec, KEY)
    enc = tables["encounters"]
    order = raw["encounters"]["encounter_id"].astype(int).rank(method="dense").astype(int) - 1
    assert enc["encounter_order"].tolist() == order.tolist()
    assert "encounter_id" not in enc and "patient_nbr" not in enc
    assert enc.loc[enc["admission_source_id"] == 7, "admission_source_desc"].iloc[0] == (
        "Emergency Room"
    )
    assert enc["max_glu_serum"].notna().all()  # 'None' means "not measured", not missing
