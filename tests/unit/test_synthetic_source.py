"""The synthetic EHR extract: schema, determinism, time consistency, labels and units."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hospital_mlops.data.sources.synthetic.parquet_extract import generate_extract, write_tables
from hospital_mlops.data.sources.synthetic.tables import generate_tables
from hospital_mlops.data.sources.synthetic.vocabulary import SITE_TIMEZONES

N_SMALL = 3_000
N_LARGE = 20_000

SCHEMA: dict[str, dict[str, str]] = {
    "patients": {
        "mrn": "object",
        "patient_name": "object",
        "birth_date": "datetime64[ns]",
        "sex": "object",
        "race": "object",
        "zip": "object",
    },
    "encounters": {
        "encounter_id": "object",
        "mrn": "object",
        "site": "object",
        "service_line": "object",
        "admit_time": "datetime64[ns]",
        "discharge_time": "datetime64[ns]",
        "admission_source": "object",
        "discharge_disposition": "object",
        "primary_dx": "object",
    },
    "vitals": {
        "encounter_id": "object",
        "event_time": "datetime64[ns, UTC]",
        "recorded_time": "datetime64[ns, UTC]",
        "heart_rate": "float64",
        "sbp": "float64",
        "dbp": "float64",
        "temp_c": "float64",
        "resp_rate": "float64",
        "spo2": "float64",
    },
    "labs": {
        "encounter_id": "object",
        "lab_code": "object",
        "value": "float64",
        "unit": "object",
        "event_time": "datetime64[ns, UTC]",
        "recorded_time": "datetime64[ns, UTC]",
    },
    "patient_merges": {
        "retired_mrn": "object",
        "surviving_mrn": "object",
        "merged_at": "datetime64[ns, UTC]",
    },
}

CANONICAL_UNITS = {"GLU": "mg/dL", "CREAT": "mg/dL", "HBA1C": "%", "NA": "mmol/L", "HGB": "g/dL"}
# (range, median band) in the canonical unit.
LAB_EXPECT = {
    "GLU": ((10, 1500), (115, 160)),
    "CREAT": ((0.1, 20), (0.8, 1.25)),
    "HBA1C": ((3, 20), (6.3, 8.0)),
    "NA": ((100, 180), (136, 142)),
    "HGB": ((3, 25), (10.5, 13.5)),
}
VITAL_EXPECT = {
    "heart_rate": ((20, 250), (78, 92)),
    "sbp": ((40, 260), (120, 136)),
    "dbp": ((20, 160), (66, 78)),
    "temp_c": ((30, 43), (36.6, 37.2)),
    "resp_rate": ((4, 60), (15, 19)),
    "spo2": ((50, 100), (94, 98)),
}


@pytest.fixture(scope="module")
def small() -> dict[str, pd.DataFrame]:
    return generate_tables(N_SMALL, seed=11)


@pytest.fixture(scope="module")
def large() -> dict[str, pd.DataFrame]:
    return generate_tables(N_LARGE, seed=7)


def _enc_int(ids: pd.Series) -> pd.Series:
    return ids.str.extract(r"(\d+)", expand=False).astype("int64")


def _utc_windows(enc: pd.DataFrame) -> pd.DataFrame:
    admit = pd.Series(pd.NaT, index=enc.index, dtype="datetime64[ns, UTC]")
    discharge = admit.copy()
    for site, tz in SITE_TIMEZONES.items():
        rows = enc["site"] == site
        for col, out in (("admit_time", admit), ("discharge_time", discharge)):
            out.loc[rows] = (
                enc.loc[rows, col]
                .dt.tz_localize(tz, ambiguous="raise", nonexistent="raise")
                .dt.tz_convert("UTC")
            )
    return pd.DataFrame(
        {"encounter_id": enc["encounter_id"], "admit_utc": admit, "discharge_utc": discharge}
    )


def _person_encounters(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Encounters with the surviving MRN as the person, sorted by person then admit."""
    enc = tables["encounters"]
    mapping = dict(
        zip(
            tables["patient_merges"]["retired_mrn"],
            tables["patient_merges"]["surviving_mrn"],
            strict=True,
        )
    )
    person = enc["mrn"].map(lambda m: mapping.get(m, m))
    return enc.assign(person=person).sort_values(["person", "admit_time"], kind="stable")


def _readmitted(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    enc = _person_encounters(tables)
    nxt = enc.groupby("person")["admit_time"].shift(-1)
    gap = nxt - enc["discharge_time"]
    eligible = ~enc["discharge_disposition"].isin(["EXPIRED", "HOSPICE"])
    label = gap.notna() & (gap <= pd.Timedelta(days=30))
    return enc.assign(readmit=label, eligible=eligible, gap=gap)


# --- schema -----------------------------------------------------------------------------------


def test_schema_names_and_dtypes(small: dict[str, pd.DataFrame]) -> None:
    assert list(small) == list(SCHEMA)
    for name, columns in SCHEMA.items():
        df = small[name]
        assert list(df.columns) == list(columns), name
        assert {c: str(t) for c, t in df.dtypes.items()} == columns, name
        assert isinstance(df.index, pd.RangeIndex)
    enc = small["encounters"]
    assert len(enc) == N_SMALL
    for col in ("encounter_id", "mrn", "site", "service_line", "admission_source"):
        assert enc[col].map(type).eq(str).all(), col


def test_value_domains(large: dict[str, pd.DataFrame]) -> None:
    pat, enc = large["patients"], large["encounters"]
    assert pat["mrn"].is_unique and pat["mrn"].str.fullmatch(r"MRN\d{10}").all()
    assert pat["zip"].str.fullmatch(r"\d{5}").all()
    assert set(pat["sex"]) == {"F", "M", "U"}
    assert set(pat["race"].dropna()) == {"White", "Black", "Hispanic", "Asian", "Other"}
    assert 0.005 < pat["race"].isna().mean() < 0.04
    assert (pat["birth_date"] == pat["birth_date"].dt.normalize()).all()
    age = (pd.Timestamp("2024-01-01") - pat["birth_date"]).dt.days / 365.25
    assert age.between(18, 95).all()

    assert set(enc["mrn"]) <= set(pat["mrn"])
    assert set(enc["site"]) == {"NORTH", "EAST", "SOUTH", "WEST"}
    shares = enc["site"].value_counts(normalize=True)
    assert shares["NORTH"] > shares["EAST"] > shares["WEST"]
    assert set(enc["service_line"]) == {
        "MEDICINE", "SURGERY", "CARDIOLOGY", "ORTHOPEDICS", "ONCOLOGY",
    }  # fmt: skip
    assert set(enc["admission_source"]) == {"EMERGENCY", "REFERRAL", "TRANSFER", "ELECTIVE"}
    dispo = enc["discharge_disposition"].value_counts(normalize=True)
    assert set(dispo.index) == {"HOME", "HOME_HEALTH", "SNF", "REHAB", "AMA", "EXPIRED", "HOSPICE"}
    assert 0.012 < dispo["EXPIRED"] < 0.03 and 0.008 < dispo["HOSPICE"] < 0.025
    assert 0.0005 < enc["primary_dx"].isna().mean() < 0.01
    assert enc["primary_dx"].nunique() >= 25

    patterns = {"NORTH": r"ENC-\d{8}", "EAST": r"enc\d+", "SOUTH": r"E/\d+", "WEST": r"  \d+  "}
    for site, pattern in patterns.items():
        assert enc.loc[enc["site"] == site, "encounter_id"].str.fullmatch(pattern).all(), site
    ints = _enc_int(enc["encounter_id"])
    assert ints.is_unique
    # Sorted by admit time, then encounter number.
    assert enc.assign(n=ints).sort_values(["admit_time", "n"]).index.equals(enc.index)

    start, end = pd.Timestamp("2024-01-01"), pd.Timestamp("2024-01-01") + pd.Timedelta(days=365)
    assert (enc["admit_time"] >= start).all() and (enc["discharge_time"] < end).all()
    los = (enc["discharge_time"] - enc["admit_time"]) / pd.Timedelta(days=1)
    assert los.between(0.5, 30).all()
    assert 2.8 < los.median() < 4.2


def test_vitals_values_and_units(large: dict[str, pd.DataFrame]) -> None:
    vit, enc = large["vitals"], large["encounters"]
    per_enc = vit.groupby("encounter_id").size()
    assert set(per_enc.index) == set(enc["encounter_id"])
    assert per_enc.between(1, 4).all() and 1.7 < per_enc.mean() < 2.4
    assert not vit.duplicated(["encounter_id", "event_time"]).any()
    for col, ((lo, hi), (mlo, mhi)) in VITAL_EXPECT.items():
        values = vit[col]
        assert 0.005 < values.isna().mean() < 0.03, col
        assert values.dropna().between(lo, hi).all(), col
        assert mlo <= values.median() <= mhi, col
    delay = vit["recorded_time"] - vit["event_time"]
    assert (delay > pd.Timedelta(0)).all() and (delay < pd.Timedelta(hours=24)).all()
    assert pd.Timedelta(minutes=5) < delay.median() < pd.Timedelta(minutes=12)


def test_labs_units_and_medians(large: dict[str, pd.DataFrame]) -> None:
    labs, enc = large["labs"], large["encounters"]
    assert not labs.duplicated(["encounter_id", "lab_code", "event_time"]).any()
    assert 2.7 < len(labs) / len(enc) < 3.8
    site = labs["encounter_id"].map(enc.set_index("encounter_id")["site"])
    south = site == "SOUTH"
    glu = labs["lab_code"] == "GLU"
    creat = labs["lab_code"] == "CREAT"
    assert (labs.loc[south & glu, "unit"] == "mmol/L").all()
    assert (labs.loc[south & creat, "unit"] == "umol/L").all()
    canonical = ~(south & (glu | creat))
    expected_unit = labs["lab_code"].map(CANONICAL_UNITS)
    assert (labs.loc[canonical, "unit"] == expected_unit[canonical]).all()

    mgdl = labs["value"].copy()
    mgdl[south & glu] *= 18.016
    mgdl[south & creat] *= 0.0113100
    for code, ((lo, hi), (mlo, mhi)) in LAB_EXPECT.items():
        rows = labs["lab_code"] == code
        assert mgdl[rows].between(lo, hi).all(), code
        assert mlo <= labs.loc[rows & canonical, "value"].median() <= mhi, code
        assert mlo <= mgdl[rows].median() <= mhi, code
    # SOUTH glucose in mmol/L has a median a canonical-unit check would flag (declared, though).
    assert 5 < labs.loc[south & glu, "value"].median() < 10
    share = labs["lab_code"].value_counts() / len(enc)
    assert share["GLU"] > 0.85 and 0.25 < share["HBA1C"] < 0.55
    delay = labs["recorded_time"] - labs["event_time"]
    assert delay.between(pd.Timedelta(minutes=30), pd.Timedelta(minutes=240)).all()


# --- time consistency -------------------------------------------------------------------------


def test_observations_inside_their_stays(large: dict[str, pd.DataFrame]) -> None:
    win = _utc_windows(large["encounters"]).set_index("encounter_id")
    assert (win["discharge_utc"] > win["admit_utc"]).all()
    for name in ("vitals", "labs"):
        obs = large[name]
        admit = obs["encounter_id"].map(win["admit_utc"])
        discharge = obs["encounter_id"].map(win["discharge_utc"])
        assert admit.notna().all(), name
        assert ((obs["event_time"] >= admit) & (obs["event_time"] <= discharge)).all(), name
        first = (obs["event_time"] - admit).groupby(obs["encounter_id"]).min()
        limit = pd.Timedelta(minutes=30) if name == "vitals" else pd.Timedelta(hours=2)
        assert (first <= limit).all(), name
        # Sorted by encounter (in encounter order), then event time.
        rank = obs["encounter_id"].map(pd.Series(np.arange(len(win)), index=win.index)).to_numpy()
        times = obs["event_time"].astype("int64").to_numpy()
        ordered = (np.diff(rank) > 0) | ((np.diff(rank) == 0) & (np.diff(times) >= 0))
        assert ordered.all(), name


def test_no_overlapping_stays_per_person(large: dict[str, pd.DataFrame]) -> None:
    enc = _person_encounters(large)
    prev_discharge = enc.groupby("person")["discharge_time"].shift(1)
    assert (enc["admit_time"] > prev_discharge).where(prev_discharge.notna(), True).all()
    # Also in UTC (a person may be seen at sites in different time zones).
    win = _utc_windows(enc)
    prev_utc = win.groupby(enc["person"])["discharge_utc"].shift(1)
    assert (win["admit_utc"] > prev_utc).where(prev_utc.notna(), True).all()
    # A death or hospice discharge is the person's last encounter.
    is_last = enc.groupby("person").cumcount(ascending=False) == 0
    terminal = enc["discharge_disposition"].isin(["EXPIRED", "HOSPICE"])
    assert (is_last | ~terminal).all()


# --- labels -----------------------------------------------------------------------------------


def test_readmission_rate_and_signal(large: dict[str, pd.DataFrame]) -> None:
    enc = _readmitted(large)
    eligible = enc[enc["eligible"]]
    rate = eligible["readmit"].mean()
    assert 0.08 <= rate <= 0.18, rate
    persons = enc.groupby("person").size()
    assert 1.3 < persons.mean() < 1.5

    def lift(mask: pd.Series) -> float:
        return float(eligible.loc[mask[eligible.index], "readmit"].mean() / rate)

    assert lift(enc["admission_source"] == "EMERGENCY") > 1.05
    assert lift(enc["service_line"].isin(["CARDIOLOGY", "ONCOLOGY"])) > 1.1
    assert lift(enc["discharge_disposition"].isin(["SNF", "AMA"])) > 1.1
    labs = large["labs"]
    creat = labs[labs["lab_code"] == "CREAT"]
    mgdl = creat["value"].where(creat["unit"] == "mg/dL", creat["value"] * 0.0113100)
    high_creat = enc["encounter_id"].map(pd.Series(mgdl.to_numpy(), index=creat["encounter_id"]))
    assert lift(high_creat > 2.0) > 1.2
    prior = enc.groupby("person").cumcount()
    assert lift(prior >= 2) > lift(prior == 0)


def test_empi_duplicates_are_exactly_the_merge_pairs(large: dict[str, pd.DataFrame]) -> None:
    pat, merges, enc = large["patients"], large["patient_merges"], large["encounters"]
    key = ["patient_name", "birth_date", "sex"]
    shared = pat[pat.duplicated(key, keep=False)]
    groups = {frozenset(g["mrn"]) for _, g in shared.groupby(key)}
    pairs = {frozenset(p) for p in zip(merges["retired_mrn"], merges["surviving_mrn"], strict=True)}
    assert pairs and groups == pairs
    assert 0.001 < len(merges) / len(pat) < 0.006
    assert merges["retired_mrn"].is_unique
    assert not set(merges["retired_mrn"]) & set(merges["surviving_mrn"])
    # Names plus birth date are unique apart from the EMPI pairs (sex aside).
    assert pat.drop_duplicates(key)[["patient_name", "birth_date"]].duplicated().sum() == 0
    used = set(enc["mrn"])
    assert set(merges["retired_mrn"]) <= used and set(merges["surviving_mrn"]) <= used


# --- writing and determinism ------------------------------------------------------------------


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def test_extract_is_byte_identical_for_a_seed(tmp_path: Path) -> None:
    a = generate_extract(tmp_path / "a", 2_000, seed=3)
    b = generate_extract(tmp_path / "b", 2_000, seed=3)
    c = generate_extract(tmp_path / "c", 2_000, seed=4)
    names = {f"{t}.parquet" for t in SCHEMA} | {"extract.json"}
    assert set(_digests(a)) == names
    assert _digests(a) == _digests(b)
    digests_c = _digests(c)
    assert all(digests_c[f"{t}.parquet"] != _digests(a)[f"{t}.parquet"] for t in SCHEMA)
    meta = json.loads((a / "extract.json").read_text())
    assert meta == {
        "source": "synthetic",
        "generator": "hospital_mlops.data.sources.synthetic",
        "n_encounters": 2_000,
        "seed": 3,
        "start": "2024-01-01",
        "days": 365,
    }


def test_written_files_round_trip(tmp_path: Path, small: dict[str, pd.DataFrame]) -> None:
    out = write_tables(small, tmp_path / "x", {"seed": 11})
    for name, df in small.items():
        back = pd.read_parquet(out / f"{name}.parquet")
        pd.testing.assert_frame_equal(back, df, check_dtype=True)
    # Any dict of frames (fault scenarios), index dropped.
    subset = {"encounters": small["encounters"].iloc[::2]}
    out2 = write_tables(subset, tmp_path / "y", {"fault": "demo"})
    assert sorted(p.name for p in out2.iterdir()) == ["encounters.parquet", "extract.json"]
    assert len(pd.read_parquet(out2 / "encounters.parquet")) == (N_SMALL + 1) // 2


def test_other_windows_and_tiny_inputs() -> None:
    t = generate_tables(50, seed=1, start="2023-03-01", days=60)
    enc = t["encounters"]
    assert len(enc) == 50
    assert enc["admit_time"].min() >= pd.Timestamp("2023-03-01")
    assert enc["discharge_time"].max() < pd.Timestamp("2023-04-30")
    assert len(generate_tables(1)["encounters"]) == 1
    with pytest.raises(ValueError):
        generate_tables(0)


def test_open_cohort_keeps_the_age_mix_steady_across_years() -> None:
    """A multi-year stream whose people enter at a stable age, not one that ages a year a year."""
    years = 4
    tables = generate_tables(40_000, seed=5, start="2020-01-01", days=years * 365, open_cohort=True)
    pat, enc = tables["patients"], tables["encounters"]
    # The only shared (name, birth date) pairs are the EMPI duplicates the merges table names.
    people = pat[~pat["mrn"].isin(tables["patient_merges"]["retired_mrn"])]
    assert not people.duplicated(["patient_name", "birth_date"]).any()
    first = enc.groupby("mrn")["admit_time"].min()
    born = pat.set_index("mrn")["birth_date"].reindex(first.index)
    age_first = (first.dt.normalize() - born).dt.days / 365.25
    assert age_first.between(18, 95).all()
    age_at_admit = (
        enc["admit_time"].dt.normalize() - enc["mrn"].map(pat.set_index("mrn")["birth_date"])
    ).dt.days / 365.25
    by_year = age_at_admit.groupby(enc["admit_time"].dt.year).mean()
    # A closed cohort's mean age rises by about one a year; an open one's stays within a year.
    assert by_year.max() - by_year.min() < 1.0, by_year.to_dict()

    closed = generate_tables(40_000, seed=5, start="2020-01-01", days=years * 365)
    c_pat, c_enc = closed["patients"], closed["encounters"]
    c_age = (
        c_enc["admit_time"].dt.normalize() - c_enc["mrn"].map(c_pat.set_index("mrn")["birth_date"])
    ).dt.days / 365.25
    c_year = c_age.groupby(c_enc["admit_time"].dt.year).mean()
    assert c_year.max() - c_year.min() > 2.0, c_year.to_dict()
