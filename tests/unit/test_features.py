from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hospital_mlops.data.normalize import HmacKey, normalize_extract
from hospital_mlops.data.sources.extract import read_extract
from hospital_mlops.features import (
    DIABETES130,
    SYNTHETIC,
    build_features,
    feature_set_for,
    icd9_group,
    icd9_group_of,
)
from hospital_mlops.features.history import history

KEY = HmacKey(b"k" * 40, demo=False)


def test_history_counts_only_the_past_and_labels_the_next_30_days() -> None:
    patient = pd.Series(["a", "a", "a", "b", "b"])
    start = np.array([0, 15, 380, 0, 50])
    end = np.array([10, 20, 385, 10, 55])
    day = 86_400
    prior, since, readmit = history(patient, start * day, end * day, window=365 * day)
    assert prior.tolist() == [
        0,
        1,
        1,
        0,
        1,
    ]  # third stay: the 2nd ended within a year, the 1st did not
    assert since[1] == pytest.approx(5.0) and np.isnan(since[0])
    assert readmit.tolist() == [True, False, False, False, False]


def test_icd9_groups_follow_strack_et_al() -> None:
    codes = pd.Series(["428", "250.83", "786", "V57", "820", None, "174"])
    assert icd9_group(codes).tolist() == [
        "circulatory",
        "diabetes",
        "respiratory",
        "other",
        "injury",
        "missing",
        "neoplasms",
    ]


@settings(max_examples=100, deadline=None, database=None)
@given(
    st.lists(
        st.none()
        | st.from_regex(r"[VE ]?[0-9]{1,7}(\.[0-9]{0,8})?[ ]?", fullmatch=True)
        | st.sampled_from(["785.9", "459.999999", "460", "1e3", "inf", "-428", "", "０３８"])
        | st.text(max_size=12),
        min_size=1,
        max_size=20,
    )
)
def test_one_code_is_grouped_as_in_a_column(codes) -> None:
    assert [icd9_group_of(c) for c in codes] == icd9_group(pd.Series(codes, dtype=object)).tolist()


def test_feature_set_version_is_a_hash_of_the_definitions() -> None:
    assert DIABETES130.version.startswith("readmission_diabetes130@")
    assert DIABETES130.version != SYNTHETIC.version
    assert DIABETES130.version == feature_set_for("diabetes130").version


def _normalized(catalog, source, extract):
    spec = catalog.source(source)
    return normalize_extract(read_extract(extract, spec), spec, KEY)[0]


def test_synthetic_features_never_look_into_the_future(catalog, synthetic_small) -> None:
    """Features of an encounter are identical whether or not later data exists."""
    full_tables = _normalized(catalog, "synthetic", synthetic_small)
    cutoff = full_tables["encounters"]["admit_time"].quantile(0.6)
    early = full_tables["encounters"]["admit_time"] < cutoff
    kept = set(full_tables["encounters"].loc[early, "encounter_token"])
    truncated = {
        "encounters": full_tables["encounters"][early],
        "patients": full_tables["patients"],
        "vitals": full_tables["vitals"][full_tables["vitals"]["encounter_token"].isin(kept)],
        "labs": full_tables["labs"][full_tables["labs"]["encounter_token"].isin(kept)],
    }
    full, _ = build_features("synthetic", full_tables)
    past, _ = build_features("synthetic", truncated)
    cols = [f.name for f in SYNTHETIC.features]
    merged = past.merge(full, on="encounter_token", suffixes=("_past", "_full"))
    assert len(merged) > 500
    for col in cols:
        a, b = merged[f"{col}_past"], merged[f"{col}_full"]
        same = (a == b) | (a.isna() & b.isna())
        assert same.all(), f"{col} changes when later data is added: it leaks the future"
    assert (merged["admissions_prior_year_full"] > 0).any()


def test_diabetes130_history_uses_only_earlier_encounters(catalog, d130_small) -> None:
    tables = _normalized(catalog, "diabetes130", d130_small)
    full, stats = build_features("diabetes130", tables)
    enc = tables["encounters"]
    early = {"encounters": enc[enc["encounter_order"] < 8000]}
    past, _ = build_features("diabetes130", early)
    merged = past.merge(full, on="encounter_token", suffixes=("_past", "_full"))
    assert (
        merged["earlier_encounters_in_extract_past"] == merged["earlier_encounters_in_extract_full"]
    ).all()
    assert stats["excluded_death_or_hospice"] > 0
    assert 0.05 < full["readmitted_30d"].mean() < 0.2
    assert list(full.columns) == DIABETES130.columns


def test_synthetic_cohort_excludes_deaths_and_unobservable_outcomes(
    catalog, synthetic_small
) -> None:
    tables = _normalized(catalog, "synthetic", synthetic_small)
    frame, stats = build_features("synthetic", tables)
    assert stats["excluded_death_or_hospice"] > 0
    assert stats["excluded_outcome_not_yet_observable"] > 0
    last = tables["encounters"]["admit_time"].max()
    assert (frame["discharge_time"] + pd.Timedelta(days=30) <= last).all()
    assert 0.06 < frame["readmitted_30d"].mean() < 0.2


def test_a_sets_version_hashes_its_own_module_and_the_shared_code_only(monkeypatch) -> None:
    import inspect

    from hospital_mlops.features import base

    real = inspect.getsource
    d130, syn = DIABETES130.version, SYNTHETIC.version

    def edited(name: str):  # the module's source with one comment added
        def getsource(obj):
            text = real(obj)
            return text + "\n# an edit\n" if getattr(obj, "__name__", "") == name else text

        return getsource

    monkeypatch.setattr(inspect, "getsource", edited("hospital_mlops.features.synthetic"))
    assert DIABETES130.version == d130  # another set's edit leaves it alone
    assert SYNTHETIC.version != syn
    monkeypatch.setattr(inspect, "getsource", edited("hospital_mlops.features.diabetes130"))
    assert DIABETES130.version != d130 and SYNTHETIC.version == syn
    monkeypatch.setattr(inspect, "getsource", edited("hospital_mlops.features.history"))
    assert DIABETES130.version != d130 and SYNTHETIC.version != syn  # shared code: both change
    assert "hospital_mlops.features.history" in base.SHARED_CODE
