"""The synthetic generator itself: ``generate_tables`` draws people, their encounters, the
readmission signal, the chains in the window, EMPI duplicates and the observation tables, in one
fixed order from one seeded generator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hospital_mlops.data.sources.synthetic.arrays import (
    choose,
    choose_per_row,
    format_ints,
    labels_at,
    segment_starts,
    sigmoid,
)
from hospital_mlops.data.sources.synthetic.chains import (
    END_MARGIN_MINUTES,
    GAP_MIN_MINUTES,
    LONG_GAP_MIN_MINUTES,
    LOS_MAX_DAYS,
    LOS_MIN_MINUTES,
    SHORT_GAP_MAX_MINUTES,
    place_chains,
    solve_intercept,
)
from hospital_mlops.data.sources.synthetic.observations import labs_table, vitals_table
from hospital_mlops.data.sources.synthetic.people import (
    FAMILY_NAMES,
    FULL_NAMES,
    chain_lengths,
    unique_birth_days,
    unique_identities,
)
from hospital_mlops.data.sources.synthetic.times import (
    MINUTE,
    MINUTES_PER_DAY,
    NS_PER_S,
    site_clock_to_utc_ns,
)
from hospital_mlops.data.sources.synthetic.vocabulary import (
    ADMISSION_BY_SERVICE,
    ADMISSION_SOURCES,
    DISPOSITIONS,
    DX_BY_SERVICE,
    DX_CODES,
    DX_MISSING_SHARE,
    RACE_MISSING_SHARE,
    RACE_SHARES,
    RACES,
    SERVICE_LINES,
    SERVICE_LOS_EFFECT,
    SERVICE_SHARES,
    SEX_SHARES,
    SEXES,
    SITE_SHARES,
    SITE_ZIP3,
    SITES,
)

# indices into SERVICE_LINES, ADMISSION_SOURCES and DISPOSITIONS
_MED, _SURG, _CARD, _ORTHO, _ONC = range(5)
_EMERGENCY = 0
_HOME, _HOME_HEALTH, _SNF, _REHAB, _AMA, _EXPIRED, _HOSPICE = range(7)
EXPIRED_SHARE = 0.02
HOSPICE_SHARE = 0.015
READMISSION_TARGET = 0.125  # share of non-terminal discharges followed by a <30-day readmission
EMPI_DUPLICATE_SHARE = 0.003


def generate_tables(
    n_encounters: int,
    seed: int = 7,
    start: str = "2024-01-01",
    days: int = 365,
    open_cohort: bool = False,
) -> dict[str, pd.DataFrame]:
    """Same data as ``generate_extract``, in memory (patients, encounters, vitals, labs, merges).

    By default every person's age is drawn as of ``start`` (a closed cohort): over a window of
    years the population then ages a year per year, which a multi-year drift study would read
    as drift. ``open_cohort`` draws the age as of each person's first admission instead, so
    people enter the window at a stable age mix. The one-year extract keeps the default, and
    the same arguments still give the same tables.
    """
    if n_encounters < 1:
        raise ValueError(f"n_encounters must be at least 1, got {n_encounters}")
    if days < 7:
        raise ValueError(f"days must be at least 7 to hold a stay, got {days}")
    t0 = pd.Timestamp(start)
    if t0.tzinfo is not None:
        raise ValueError(f"start must be a naive local date, got {start!r}")
    t0 = t0.normalize()
    start_ns = int(t0.value)
    n = int(n_encounters)
    rng = np.random.default_rng(seed)

    # -- people --------------------------------------------------------------------------------
    kmax = max(1, min(8, days // 45))
    z, k = chain_lengths(rng, n, kmax)
    persons = len(k)
    age_years = 18.0 + 77.0 * rng.beta(2.4, 1.5, size=persons)
    age_lo, age_hi = int(np.ceil(18 * 365.25)) + 1, int(np.floor(95 * 365.25)) - 1
    age_days = np.clip(np.floor(age_years * 365.25), age_lo, age_hi).astype(np.int64)
    sex = choose(rng, SEX_SHARES, persons)
    race = choose(rng, RACE_SHARES, persons)
    race_missing = rng.random(persons) < RACE_MISSING_SHARE
    home_site = choose(rng, SITE_SHARES, persons)
    zip_pick = rng.random(persons)
    zip_tail = rng.integers(0, 100, size=persons)
    main_service = choose(rng, SERVICE_SHARES, persons)
    diabetic = rng.random(persons) < 0.35
    given, family, age_days = unique_identities(rng, sex, age_days, age_lo, age_hi)
    age = age_days / 365.25
    age_std = (age - 65.0) / 15.0

    # -- encounter attributes (person-major order) ---------------------------------------------
    person = np.repeat(np.arange(persons, dtype=np.int64), k)
    first = segment_starts(k)
    pos = np.arange(n, dtype=np.int64) - first[person]
    last = pos == k[person] - 1

    away = rng.random(n) < 0.08
    site = np.where(away, choose(rng, SITE_SHARES, n), home_site[person])
    service = np.where(rng.random(n) < 0.6, main_service[person], choose(rng, SERVICE_SHARES, n))
    dx_counts = np.array([len(c) for c in DX_BY_SERVICE], dtype=np.int64)
    dx = segment_starts(dx_counts)[service] + np.floor(rng.random(n) * dx_counts[service]).astype(
        np.int64
    )
    dx_missing = rng.random(n) < DX_MISSING_SHARE
    dx_code = np.array(DX_CODES)[dx]
    adm_cum = np.cumsum(ADMISSION_BY_SERVICE, axis=1)[service]
    admission = np.minimum((rng.random(n)[:, None] >= adm_cum).sum(axis=1), 3).astype(np.int64)

    acuity = 0.6 * z[person] + 0.15 * age_std[person] + 0.75 * rng.standard_normal(n)
    acuity += np.where(admission == _EMERGENCY, 0.2, -0.1)
    los_days = np.exp(
        np.log(3.3)
        + 0.2 * acuity
        + np.array(SERVICE_LOS_EFFECT)[service]
        + 0.6 * rng.standard_normal(n)
    )
    los_days = np.clip(los_days, LOS_MIN_MINUTES / MINUTES_PER_DAY, LOS_MAX_DAYS)
    los_min = np.floor(los_days * MINUTES_PER_DAY).astype(np.int64)

    # True lab values for the stay (mg/dL, %, mmol/L, g/dL).
    dia = diabetic[person]
    glu = np.exp(np.log(np.where(dia, 165.0, 120.0)) + 0.1 * acuity + 0.28 * rng.standard_normal(n))
    glu *= np.where(dx_code == "E11.65", 1.8, 1.0)
    a1c = np.exp(
        np.log(np.where(dia, 7.9, 5.6)) + np.where(dia, 0.17, 0.07) * rng.standard_normal(n)
    )
    a1c *= np.where(dx_code == "E11.65", 1.25, 1.0)
    creat = np.exp(np.log(0.92) + 0.25 * acuity + 0.3 * rng.standard_normal(n))
    creat *= np.select([dx_code == "N18.4", dx_code == "N17.9"], [3.2, 2.3], 1.0)
    creat *= np.where(service == _CARD, 1.15, 1.0)
    sodium = 139.5 - 1.2 * acuity + 3.2 * rng.standard_normal(n)
    sodium -= np.where(dx_code == "E87.1", 11.0, 0.0)
    hgb = 12.2 - 0.8 * acuity + 1.7 * rng.standard_normal(n) + np.where(sex[person] == 1, 1.0, 0.0)
    hgb -= np.where(service == _ONC, 1.5, 0.0)
    hgb -= np.where(np.isin(dx_code, ["K92.2", "D64.9"]), 3.0, 0.0)
    glu = np.clip(glu, 25.0, 1200.0)
    a1c = np.clip(a1c, 3.6, 18.0)
    creat = np.clip(creat, 0.2, 15.0)
    sodium = np.clip(sodium, 108.0, 170.0)
    hgb = np.clip(hgb, 3.5, 22.0)

    # Discharge disposition: non-terminal from age/acuity/service, terminal only when last.
    a = age_std[person]
    weights = np.stack(
        [
            0.60 * np.exp(-0.5 * a - 0.2 * acuity),
            0.16 * np.exp(0.2 * a),
            0.12 * np.exp(0.8 * a + 0.3 * acuity),
            0.07 * np.where(service == _ORTHO, 3.0, 1.0),
            0.03 * np.exp(-0.6 * a) * np.where(admission == _EMERGENCY, 1.5, 0.7),
        ],
        axis=1,
    )
    disposition = choose_per_row(rng, weights)
    w_exp = np.exp(0.5 * a + 0.5 * acuity) * np.where(service == _ONC, 1.5, 1.0) * last
    w_hos = np.exp(0.6 * a + 0.3 * acuity) * np.where(service == _ONC, 4.0, 1.0) * last
    p_exp = np.minimum(w_exp * (EXPIRED_SHARE * n / max(w_exp.sum(), 1e-12)), 0.45)
    p_hos = np.minimum(w_hos * (HOSPICE_SHARE * n / max(w_hos.sum(), 1e-12)), 0.45)
    u = rng.random(n)
    disposition = np.where(u < p_exp, _EXPIRED, disposition)
    disposition = np.where((u >= p_exp) & (u < p_exp + p_hos), _HOSPICE, disposition)

    # -- readmission signal: P(next admit within 30 days | a next admit exists) ----------------
    linear = (
        0.30 * np.minimum(pos, 4)
        + 0.25 * a
        + 0.45 * (admission == _EMERGENCY)
        + 0.35 * (service == _CARD)
        + 0.50 * (service == _ONC)
        + 0.40 * np.clip(creat - 1.3, 0.0, 3.0)
        + 0.45 * (hgb < 10.0)
        + 0.35 * (sodium < 135.0)
        + 0.30 * np.log(los_days / 3.5)
        + 0.40 * (disposition == _SNF)
        + 0.70 * (disposition == _AMA)
        + 0.15 * (disposition == _HOME_HEALTH)
        + 0.45 * z[person]
    )
    has_next = ~last
    eligible = int((~np.isin(disposition, [_EXPIRED, _HOSPICE])).sum())
    target = float(np.clip(READMISSION_TARGET * eligible / max(int(has_next.sum()), 1), 0.01, 0.9))
    b0 = solve_intercept(linear[has_next], target) if has_next.any() else 0.0
    short = has_next & (rng.random(n) < sigmoid(b0 + linear))
    short_gap = GAP_MIN_MINUTES + rng.beta(1.3, 2.2, size=n) * (
        SHORT_GAP_MAX_MINUTES - GAP_MIN_MINUTES
    )
    long_gap = LONG_GAP_MIN_MINUTES + rng.exponential(75.0 * MINUTES_PER_DAY, size=n)
    gap = np.where(has_next, np.where(short, short_gap, long_gap), 0.0)
    gap_min = np.floor(gap).astype(np.int64)

    # -- place chains in the window and convert to UTC -----------------------------------------
    avail = days * MINUTES_PER_DAY - END_MARGIN_MINUTES
    admit_min, los_min, gap_min = place_chains(rng, person, k, los_min, gap_min, short, avail)
    discharge_min = admit_min + los_min
    minute_ns = MINUTE * NS_PER_S
    admit_utc = site_clock_to_utc_ns(start_ns + admit_min * minute_ns, site)
    discharge_utc = site_clock_to_utc_ns(start_ns + discharge_min * minute_ns, site)
    nat = np.iinfo(np.int64).min
    for _ in range(6):  # a DST gap/fold time moves the whole stay one hour later
        bad = (admit_utc == nat) | (discharge_utc == nat)
        if not bad.any():
            break
        admit_min[bad] += 60
        discharge_min[bad] += 60
        admit_utc[bad] = site_clock_to_utc_ns(start_ns + admit_min[bad] * minute_ns, site[bad])
        discharge_utc[bad] = site_clock_to_utc_ns(
            start_ns + discharge_min[bad] * minute_ns, site[bad]
        )

    # -- EMPI duplicates: a second MRN for a person, holding one of their encounters -----------
    candidates = np.flatnonzero(k >= 2)
    n_dup = min(round(EMPI_DUPLICATE_SHARE * persons), len(candidates))
    dup_person = np.sort(rng.choice(candidates, size=n_dup, replace=False)).astype(np.int64)
    dup_enc = first[dup_person] + np.floor(rng.random(n_dup) * k[dup_person]).astype(np.int64)
    n_mrn = persons + n_dup
    mrn_num = rng.permutation(1_000_000 + np.cumsum(rng.integers(1, 40, size=n_mrn)))
    mrn_str = format_ints(mrn_num.astype(np.int64), prefix="MRN", width=10)
    enc_mrn = person.copy()
    enc_mrn[dup_enc] = persons + np.arange(n_dup, dtype=np.int64)
    merged_delay_s = rng.integers(3600, 45 * 86400, size=n_dup)

    # -- sort encounters; number them in admit order; spell per site ---------------------------
    order = np.lexsort((person, admit_min))
    base = int(rng.integers(1_000_000, 2_000_000))
    step = max(1, min(11, (95_000_000 - base) // n))
    enc_int = base + np.cumsum(rng.integers(1, step + 1, size=n)).astype(np.int64)
    s_site = site[order]
    enc_id = np.empty(n, dtype=object)
    spellings = (("ENC-", 8, ""), ("enc", 0, ""), ("E/", 0, ""), ("  ", 0, "  "))
    for i, (prefix, width, suffix) in enumerate(spellings):
        rows = s_site == i
        if rows.any():
            enc_id[rows] = format_ints(enc_int[rows], prefix=prefix, width=width, suffix=suffix)

    dx_obj = labels_at(DX_CODES, dx[order])
    dx_obj[dx_missing[order]] = None
    encounters = pd.DataFrame(
        {
            "encounter_id": enc_id,
            "mrn": mrn_str[enc_mrn[order]],
            "site": labels_at(SITES, s_site),
            "service_line": labels_at(SERVICE_LINES, service[order]),
            "admit_time": (start_ns + admit_min[order] * minute_ns).view("M8[ns]"),
            "discharge_time": (start_ns + discharge_min[order] * minute_ns).view("M8[ns]"),
            "admission_source": labels_at(ADMISSION_SOURCES, admission[order]),
            "discharge_disposition": labels_at(DISPOSITIONS, disposition[order]),
            "primary_dx": dx_obj,
        }
    )

    # Per-encounter arrays in the sorted order, for the observation tables.
    adm_s = admit_utc[order] // NS_PER_S
    stay_s = (discharge_utc[order] - admit_utc[order]) // NS_PER_S
    s_acuity = acuity[order]
    vitals = vitals_table(rng, enc_id, adm_s, stay_s, s_acuity, dx_code[order])
    labs = labs_table(
        rng,
        enc_id,
        adm_s,
        stay_s,
        s_site,
        dia[order],
        np.stack([glu, creat, a1c, sodium, hgb], axis=1)[order],
    )

    # -- patients and merges -------------------------------------------------------------------
    owner = np.concatenate([np.arange(persons, dtype=np.int64), dup_person])
    zip3_choices = [np.array(z3, dtype=np.int64) for z3 in SITE_ZIP3]
    zip3 = np.zeros(persons, dtype=np.int64)
    for i, choices in enumerate(zip3_choices):
        rows = home_site == i
        zip3[rows] = choices[np.floor(zip_pick[rows] * len(choices)).astype(np.int64)]
    race_obj = labels_at(RACES, race)
    race_obj[race_missing] = None
    if open_cohort:
        first_day = np.minimum.reduceat(admit_min, first) // MINUTES_PER_DAY
        age_days = unique_birth_days(
            np.random.default_rng([seed, 1]), given, family, first_day, age_days, age_lo, age_hi
        )
        birth_day = first_day - age_days
    else:
        birth_day = -age_days
    birth = (start_ns + birth_day * 86400 * NS_PER_S).astype(np.int64)
    patients = pd.DataFrame(
        {
            "mrn": mrn_str,
            "patient_name": FULL_NAMES[given * len(FAMILY_NAMES) + family][owner],
            "birth_date": birth[owner].view("M8[ns]"),
            "sex": labels_at(SEXES, sex)[owner],
            "race": race_obj[owner],
            "zip": format_ints((zip3 * 100 + zip_tail)[owner], width=5),
        }
    )
    patients = patients.iloc[np.argsort(mrn_num, kind="stable")].reset_index(drop=True)

    window_end_ns = start_ns + days * MINUTES_PER_DAY * minute_ns
    merged_ns = np.minimum(discharge_utc[dup_enc] + merged_delay_s * NS_PER_S, window_end_ns)
    merges = pd.DataFrame(
        {
            "retired_mrn": mrn_str[persons:],
            "surviving_mrn": mrn_str[dup_person],
            "merged_at": pd.DatetimeIndex(merged_ns.view("M8[ns]")).tz_localize("UTC"),
        }
    )
    merges = merges.iloc[np.argsort(mrn_num[persons:], kind="stable")].reset_index(drop=True)

    return {
        "patients": patients,
        "encounters": encounters,
        "vitals": vitals,
        "labs": labs,
        "patient_merges": merges,
    }
