"""A seeded, multi-table synthetic EHR extract shaped like a real multi-site feed.

``generate_tables`` builds five tables in memory (``patients``, ``encounters``, ``vitals``,
``labs``, ``patient_merges``); ``write_tables`` writes any such dict as deterministic parquet plus
``extract.json``; ``generate_extract`` does both. The same arguments always give byte-identical
files: every random draw comes from one ``numpy.random.default_rng(seed)`` in a fixed order, and
everything is vectorized (no per-encounter Python loops), so a million encounters take seconds.

What the data is made of, so tests and fault scenarios know what to expect:

* **People and chains.** Each person has a latent frailty ``z``. The number of encounters per
  person is ``1 + Poisson`` (mean about 1.4) and grows with ``z``. A person's encounters form a
  chain: length of stay, then a gap to the next admission, then the next stay. Gaps come from a
  mixture: a short gap (12 h to 29 days, i.e. a 30-day readmission) or a long one (at least 32
  days). The probability of a short gap is a logistic function of observable signal (prior
  admissions, age, EMERGENCY admission, CARDIOLOGY/ONCOLOGY, high creatinine, low haemoglobin,
  low sodium, length of stay, discharge to SNF or AMA) plus ``z``; its intercept is solved so that
  about 12.5 % of eligible discharges are followed by a readmission. Chains are placed inside the
  window ``[start, start + days)``; gaps are compressed only when a chain would not fit.
* **Terminal discharges.** EXPIRED (about 2 % of encounters) and HOSPICE (about 1.5 %) only
  happen on a person's last encounter.
* **Sites and time.** Encounter times are site wall-clock (naive). Times that fall in a DST gap or
  fold are moved one hour later, so every admit/discharge converts to UTC unambiguously. Vitals
  and labs are in UTC and always inside ``[admit, discharge]`` after that conversion.
* **Identifiers.** The encounter integer is unique across the extract and increases with admit
  time; each site spells it its own way (``ENC-00001234``, ``enc1234``, ``E/1234``, ``  1234  ``).
  ``(patient_name, birth_date)`` is unique per person; about 0.3 % of people are registered twice
  (an EMPI duplicate: identical name, birth date, sex, race and ZIP under a second MRN that holds
  one of their encounters), and each such pair is listed in ``patient_merges``.
* **Units.** Every lab row uses the canonical unit, except SOUTH glucose (``mmol/L``, value =
  mg/dL / 18.016, 1 decimal) and SOUTH creatinine (``umol/L``, value = mg/dL / 0.0113100, whole
  numbers), both correctly declared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

__all__ = [
    "DISPOSITIONS",
    "LAB_CODES",
    "SITES",
    "SITE_TIMEZONES",
    "TABLES",
    "generate_extract",
    "generate_tables",
    "write_tables",
]

IntArr = npt.NDArray[np.int64]
FloatArr = npt.NDArray[np.float64]
BoolArr = npt.NDArray[np.bool_]
ObjArr = npt.NDArray[np.object_]

GENERATOR = "hospital_mlops.data.sources.synthetic"
TABLES = ("patients", "encounters", "vitals", "labs", "patient_merges")

SITES = ("NORTH", "EAST", "SOUTH", "WEST")
SITE_SHARES = (0.35, 0.25, 0.25, 0.15)
SITE_TIMEZONES = {
    "NORTH": "America/New_York",
    "EAST": "America/New_York",
    "SOUTH": "America/Chicago",
    "WEST": "America/Los_Angeles",
}
_SOUTH = SITES.index("SOUTH")
# First three ZIP digits by site (residents mostly live near their home site).
_SITE_ZIP3 = (
    (100, 101, 102, 103, 104, 112, 113),
    (21, 22, 23, 24, 19, 20),
    (606, 607, 608, 600, 601),
    (900, 902, 910, 913, 917),
)

SERVICE_LINES = ("MEDICINE", "SURGERY", "CARDIOLOGY", "ORTHOPEDICS", "ONCOLOGY")
SERVICE_SHARES = (0.40, 0.20, 0.17, 0.10, 0.13)
_MED, _SURG, _CARD, _ORTHO, _ONC = range(5)
_SERVICE_LOS_EFFECT = (0.0, 0.10, -0.10, 0.05, 0.20)

ADMISSION_SOURCES = ("EMERGENCY", "REFERRAL", "TRANSFER", "ELECTIVE")
_EMERGENCY = 0
# P(admission source | service line), rows in SERVICE_LINES order.
_ADMISSION_BY_SERVICE = np.array(
    [
        [0.70, 0.12, 0.10, 0.08],
        [0.35, 0.15, 0.08, 0.42],
        [0.60, 0.15, 0.12, 0.13],
        [0.30, 0.12, 0.06, 0.52],
        [0.40, 0.25, 0.10, 0.25],
    ]
)

DISPOSITIONS = ("HOME", "HOME_HEALTH", "SNF", "REHAB", "AMA", "EXPIRED", "HOSPICE")
_HOME, _HOME_HEALTH, _SNF, _REHAB, _AMA, _EXPIRED, _HOSPICE = range(7)
EXPIRED_SHARE = 0.02
HOSPICE_SHARE = 0.015

# Principal diagnoses (ICD-10-CM) by service line.
_DX_BY_SERVICE: tuple[tuple[str, ...], ...] = (
    (
        "A41.9", "J44.1", "J18.9", "N17.9", "E11.65", "N18.4",
        "K92.2", "N39.0", "E87.1", "J96.01", "D64.9",
    ),
    ("K35.80", "K80.00", "K56.609", "K57.32", "K65.0", "K40.90"),
    ("I50.9", "I21.4", "I48.91", "I50.23", "I20.0", "I63.9"),
    ("S72.001A", "S72.141A", "M17.11", "M16.11"),
    ("C34.90", "C18.9", "C50.919", "C61", "D70.1"),
)  # fmt: skip
_DX_CODES: tuple[str, ...] = tuple(c for codes in _DX_BY_SERVICE for c in codes)
_DX_MISSING = 0.003

LAB_CODES = ("GLU", "CREAT", "HBA1C", "NA", "HGB")
_GLU, _CREAT, _HBA1C, _NA, _HGB = range(5)
_CANONICAL_UNITS = ("mg/dL", "mg/dL", "%", "mmol/L", "g/dL")
GLUCOSE_MGDL_PER_MMOLL = 18.016
CREATININE_MGDL_PER_UMOLL = 0.0113100

_GIVEN_F = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly",
    "Emily", "Donna", "Michelle", "Carol", "Amanda", "Dorothy", "Melissa", "Deborah",
    "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia", "Kathleen", "Amy", "Angela",
    "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen", "Samantha", "Katherine",
    "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria", "Heather",
    "Diane", "Ruth", "Julie", "Olivia", "Joyce", "Virginia", "Victoria", "Kelly", "Lauren",
    "Christina",
)  # fmt: skip
_GIVEN_M = (
    "James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven",
    "Paul", "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald",
    "Edward", "Jason", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan",
    "Stephen", "Larry", "Justin", "Scott", "Brandon", "Benjamin", "Samuel", "Gregory",
    "Alexander", "Frank", "Patrick", "Raymond", "Jack", "Dennis", "Jerry", "Tyler", "Aaron",
    "Jose", "Adam", "Nathan", "Henry", "Douglas", "Zachary", "Peter", "Kyle",
)  # fmt: skip
_FAMILY = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
    "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas",
    "Taylor", "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris",
    "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King",
    "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores", "Green", "Adams", "Nelson",
    "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts", "Gomez",
    "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
    "Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz",
    "Morgan", "Cooper", "Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim",
    "Cox", "Ward", "Richardson", "Watson", "Brooks", "Chavez", "Wood", "James", "Bennett",
    "Gray", "Mendoza", "Ruiz", "Hughes", "Price", "Alvarez", "Castillo", "Sanders", "Patel",
    "Myers", "Long", "Ross", "Foster", "Jimenez", "Powell", "Jenkins", "Perry", "Russell",
    "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes", "Gonzales", "Fisher",
    "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham",
    "Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant", "Herrera",
    "Gibson", "Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford", "Castro",
    "Marshall", "Owens", "Harrison", "Fernandez", "Mcdonald", "Woods", "Washington", "Kennedy",
    "Wells", "Vargas", "Henry", "Chen", "Freeman", "Webb", "Tucker", "Guzman", "Burns",
    "Crawford", "Olson", "Simpson", "Porter", "Hunter", "Gordon", "Mendez", "Silva", "Shaw",
)  # fmt: skip
_GIVEN = _GIVEN_F + _GIVEN_M
_FULL_NAMES = np.array([f"{g} {f}" for g in _GIVEN for f in _FAMILY], dtype=object)

SEXES = ("F", "M", "U")
_SEX_SHARES = (0.519, 0.479, 0.002)
RACES = ("White", "Black", "Hispanic", "Asian", "Other")
_RACE_SHARES = (0.60, 0.18, 0.12, 0.06, 0.04)
_RACE_MISSING = 0.02

READMISSION_TARGET = 0.125  # share of non-terminal discharges followed by a <30-day readmission
EMPI_DUPLICATE_SHARE = 0.003
MEAN_ENCOUNTERS_PER_PERSON = 1.4

_MIN = 60  # seconds
_DAY_MIN = 1440  # minutes
_LOS_MIN_MINUTES = int(0.55 * _DAY_MIN)  # 0.5 d plus room for a DST hour
_LOS_MAX_DAYS = 29.9
_GAP_MIN_MINUTES = _DAY_MIN // 2  # 12 h between a discharge and the next admit
_SHORT_GAP_MAX_MINUTES = 29 * _DAY_MIN
_LONG_GAP_MIN_MINUTES = 32 * _DAY_MIN
_END_MARGIN_MINUTES = 6 * 60  # DST nudges (at most +1 h each) stay inside the window
_NS_PER_S = 1_000_000_000

_VITAL_COLUMNS = ("heart_rate", "sbp", "dbp", "temp_c", "resp_rate", "spo2")
_VITAL_MISSING = 0.015
_VITAL_SETS_P = (0.35, 0.35, 0.20, 0.10)  # 1..4 sets per encounter, mean 2.05


# --- small vectorized helpers ------------------------------------------------------------------


def _choice(rng: np.random.Generator, shares: tuple[float, ...], size: int) -> IntArr:
    p = np.asarray(shares, dtype=np.float64)
    return rng.choice(len(p), size=size, p=p / p.sum()).astype(np.int64)


def _rowwise_choice(rng: np.random.Generator, weights: FloatArr) -> IntArr:
    """One category per row from per-row (unnormalized) weights of shape (n, k)."""
    cum = np.cumsum(weights, axis=1)
    u = rng.random(len(weights)) * cum[:, -1]
    idx = (u[:, None] >= cum).sum(axis=1)
    return np.minimum(idx, weights.shape[1] - 1).astype(np.int64)


def _sigmoid(x: FloatArr) -> FloatArr:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _strings(values: IntArr, prefix: str = "", width: int = 0, suffix: str = "") -> ObjArr:
    """Format integers as ``prefix + zero-padded digits + suffix`` (vectorized, via Arrow)."""
    arr: Any = pa.array(values, type=pa.int64()).cast(pa.string())
    if width:
        arr = pc.utf8_lpad(arr, width=width, padding="0")
    if prefix or suffix:
        arr = pc.binary_join_element_wise(prefix, arr, suffix, "")
    return np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)


def _lookup(labels: tuple[str, ...], idx: IntArr) -> ObjArr:
    """Index into a small label list; rows share the label objects (cheap at any size)."""
    return np.asarray(np.array(labels, dtype=object)[idx], dtype=object)


def _segment_starts(counts: IntArr) -> IntArr:
    return np.asarray(np.cumsum(counts) - counts, dtype=np.int64)


def _utc_seconds(seconds: IntArr) -> pd.DatetimeIndex:
    """Epoch seconds as tz-aware UTC datetime64[ns]."""
    ns = np.asarray(seconds, dtype=np.int64) * _NS_PER_S
    return pd.DatetimeIndex(ns.view("M8[ns]")).tz_localize("UTC")


def _to_utc_ns(local_ns: IntArr, site: IntArr) -> IntArr:
    """Site wall clock → UTC epoch ns; DST-gap and DST-fold times come back as NaT (int64 min)."""
    out = np.full(len(local_ns), np.iinfo(np.int64).min, dtype=np.int64)
    for tz in sorted(set(SITE_TIMEZONES.values())):
        rows = np.isin(site, [i for i, s in enumerate(SITES) if SITE_TIMEZONES[s] == tz])
        if not rows.any():
            continue
        idx = pd.DatetimeIndex(local_ns[rows].view("M8[ns]")).tz_localize(
            tz, ambiguous="NaT", nonexistent="NaT"
        )
        out[rows] = idx.asi8
    return out


# --- people ------------------------------------------------------------------------------------


def _chain_lengths(rng: np.random.Generator, n: int, kmax: int) -> tuple[FloatArr, IntArr]:
    """Frailty z and encounters per person, trimmed so that the counts sum to exactly n."""
    size = int(n / MEAN_ENCOUNTERS_PER_PERSON * 1.1) + 16
    while True:
        z = rng.standard_normal(size)
        lam = (MEAN_ENCOUNTERS_PER_PERSON - 1.0) * np.exp(0.7 * z - 0.245)
        k = np.minimum(1 + rng.poisson(lam), kmax).astype(np.int64)
        total = np.cumsum(k)
        if total[-1] >= n:
            break
        size *= 2
    persons = int(np.searchsorted(total, n)) + 1
    k = k[:persons].copy()
    k[-1] -= int(total[persons - 1]) - n
    return z[:persons].copy(), k


def _unique_identities(
    rng: np.random.Generator, sex: IntArr, age_days: IntArr, lo: int, hi: int
) -> tuple[IntArr, IntArr, IntArr]:
    """Given-name index, family index and age in days with (name, birth date) unique."""
    n = len(sex)
    n_f, n_m, n_fam = len(_GIVEN_F), len(_GIVEN_M), len(_FAMILY)

    def draw_given(s: IntArr) -> IntArr:
        g = rng.integers(0, n_f + n_m, size=len(s))
        g = np.where(s == 0, g % n_f, g)
        return np.where(s == 1, n_f + g % n_m, g).astype(np.int64)

    given = draw_given(sex)
    family = rng.integers(0, n_fam, size=n).astype(np.int64)
    days = age_days.copy()
    while True:
        key = (given * n_fam + family) * 100_000 + days
        dup = pd.Index(key).duplicated(keep="first")
        if not dup.any():
            return given, family, days
        rows = np.flatnonzero(dup)
        given[rows] = draw_given(sex[rows])
        family[rows] = rng.integers(0, n_fam, size=len(rows))
        days[rows] = np.clip(days[rows] + rng.integers(-200, 201, size=len(rows)), lo, hi)


def _unique_birth_days(
    rng: np.random.Generator,
    given: IntArr,
    family: IntArr,
    first_day: IntArr,
    age_days: IntArr,
    lo: int,
    hi: int,
) -> IntArr:
    """Ages at first admission with (name, first day - age) unique: one person per identity."""
    days = age_days.copy()
    n_fam = len(_FAMILY)
    while True:
        key = (given * n_fam + family) * 10_000_000 + (first_day - days + 5_000_000)
        dup = pd.Index(key).duplicated(keep="first")
        if not dup.any():
            return days
        rows = np.flatnonzero(dup)
        days[rows] = np.clip(days[rows] + rng.integers(-200, 201, size=len(rows)), lo, hi)


# --- encounters --------------------------------------------------------------------------------


def _solve_intercept(linear: FloatArr, target: float) -> float:
    """The intercept b with mean(sigmoid(b + linear)) == target (bisection; deterministic)."""
    lo, hi = -20.0, 20.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if float(_sigmoid(mid + linear).mean()) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def _place_chains(
    rng: np.random.Generator,
    person: IntArr,
    k: IntArr,
    los: IntArr,
    gap: IntArr,
    short: BoolArr,
    avail: int,
) -> tuple[IntArr, IntArr, IntArr]:
    """Fit each person's chain inside [0, avail) minutes; return (admit, los, gap) in minutes.

    Chains that do not fit are squeezed in steps that keep the readmission label whenever
    possible: long gaps first (down to 32 days), then short gaps (down to 12 h), then long gaps
    below 32 days, and finally lengths of stay (down to 0.55 d).
    """
    persons = len(k)
    # Squeeze to a per-person limit a little below the window, so squeezed chains do not all
    # start on the window's first minute.
    limit = avail - np.floor(rng.random(persons) * 0.1 * avail)
    gap_f = gap.astype(np.float64)
    los_f = los.astype(np.float64)
    long_ = ~short & (gap > 0)
    short = short & (gap > 0)

    def squeeze(values: FloatArr, rows: BoolArr, floor: float) -> None:
        need = np.bincount(person, weights=los_f + gap_f, minlength=persons)
        over = np.maximum(need - limit, 0.0)
        if not over.any():
            return
        excess = np.bincount(person, weights=np.where(rows, values - floor, 0.0), minlength=persons)
        frac = np.where(excess > 0, np.clip(1.0 - over / np.maximum(excess, 1e-9), 0.0, 1.0), 1.0)
        f = frac[person]
        values[rows] = floor + (values[rows] - floor) * f[rows]

    squeeze(gap_f, long_, float(_LONG_GAP_MIN_MINUTES))
    squeeze(gap_f, short, float(_GAP_MIN_MINUTES))
    squeeze(gap_f, long_, float(_GAP_MIN_MINUTES))
    squeeze(los_f, np.ones(len(los_f), dtype=bool), float(_LOS_MIN_MINUTES))
    gap_out = np.floor(gap_f).astype(np.int64)
    los_out = np.floor(los_f).astype(np.int64)
    seg = los_out + gap_out
    need = np.bincount(person, weights=seg, minlength=persons).astype(np.int64)
    slack = np.maximum(avail - need, 0)
    chain_start = np.floor(rng.random(persons) * (slack + 1)).astype(np.int64)
    within = np.cumsum(seg) - seg
    within -= within[_segment_starts(k)][person]
    return chain_start[person] + within, los_out, gap_out


# --- the generator -----------------------------------------------------------------------------


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
    z, k = _chain_lengths(rng, n, kmax)
    persons = len(k)
    age_years = 18.0 + 77.0 * rng.beta(2.4, 1.5, size=persons)
    age_lo, age_hi = int(np.ceil(18 * 365.25)) + 1, int(np.floor(95 * 365.25)) - 1
    age_days = np.clip(np.floor(age_years * 365.25), age_lo, age_hi).astype(np.int64)
    sex = _choice(rng, _SEX_SHARES, persons)
    race = _choice(rng, _RACE_SHARES, persons)
    race_missing = rng.random(persons) < _RACE_MISSING
    home_site = _choice(rng, SITE_SHARES, persons)
    zip_pick = rng.random(persons)
    zip_tail = rng.integers(0, 100, size=persons)
    main_service = _choice(rng, SERVICE_SHARES, persons)
    diabetic = rng.random(persons) < 0.35
    given, family, age_days = _unique_identities(rng, sex, age_days, age_lo, age_hi)
    age = age_days / 365.25
    age_std = (age - 65.0) / 15.0

    # -- encounter attributes (person-major order) ---------------------------------------------
    person = np.repeat(np.arange(persons, dtype=np.int64), k)
    first = _segment_starts(k)
    pos = np.arange(n, dtype=np.int64) - first[person]
    last = pos == k[person] - 1

    away = rng.random(n) < 0.08
    site = np.where(away, _choice(rng, SITE_SHARES, n), home_site[person])
    service = np.where(rng.random(n) < 0.6, main_service[person], _choice(rng, SERVICE_SHARES, n))
    dx_counts = np.array([len(c) for c in _DX_BY_SERVICE], dtype=np.int64)
    dx = _segment_starts(dx_counts)[service] + np.floor(rng.random(n) * dx_counts[service]).astype(
        np.int64
    )
    dx_missing = rng.random(n) < _DX_MISSING
    dx_code = np.array(_DX_CODES)[dx]
    adm_cum = np.cumsum(_ADMISSION_BY_SERVICE, axis=1)[service]
    admission = np.minimum((rng.random(n)[:, None] >= adm_cum).sum(axis=1), 3).astype(np.int64)

    acuity = 0.6 * z[person] + 0.15 * age_std[person] + 0.75 * rng.standard_normal(n)
    acuity += np.where(admission == _EMERGENCY, 0.2, -0.1)
    los_days = np.exp(
        np.log(3.3)
        + 0.2 * acuity
        + np.array(_SERVICE_LOS_EFFECT)[service]
        + 0.6 * rng.standard_normal(n)
    )
    los_days = np.clip(los_days, _LOS_MIN_MINUTES / _DAY_MIN, _LOS_MAX_DAYS)
    los_min = np.floor(los_days * _DAY_MIN).astype(np.int64)

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
    disposition = _rowwise_choice(rng, weights)
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
    b0 = _solve_intercept(linear[has_next], target) if has_next.any() else 0.0
    short = has_next & (rng.random(n) < _sigmoid(b0 + linear))
    short_gap = _GAP_MIN_MINUTES + rng.beta(1.3, 2.2, size=n) * (
        _SHORT_GAP_MAX_MINUTES - _GAP_MIN_MINUTES
    )
    long_gap = _LONG_GAP_MIN_MINUTES + rng.exponential(75.0 * _DAY_MIN, size=n)
    gap = np.where(has_next, np.where(short, short_gap, long_gap), 0.0)
    gap_min = np.floor(gap).astype(np.int64)

    # -- place chains in the window and convert to UTC -----------------------------------------
    avail = days * _DAY_MIN - _END_MARGIN_MINUTES
    admit_min, los_min, gap_min = _place_chains(rng, person, k, los_min, gap_min, short, avail)
    discharge_min = admit_min + los_min
    minute_ns = _MIN * _NS_PER_S
    admit_utc = _to_utc_ns(start_ns + admit_min * minute_ns, site)
    discharge_utc = _to_utc_ns(start_ns + discharge_min * minute_ns, site)
    nat = np.iinfo(np.int64).min
    for _ in range(6):  # a DST gap/fold time moves the whole stay one hour later
        bad = (admit_utc == nat) | (discharge_utc == nat)
        if not bad.any():
            break
        admit_min[bad] += 60
        discharge_min[bad] += 60
        admit_utc[bad] = _to_utc_ns(start_ns + admit_min[bad] * minute_ns, site[bad])
        discharge_utc[bad] = _to_utc_ns(start_ns + discharge_min[bad] * minute_ns, site[bad])

    # -- EMPI duplicates: a second MRN for a person, holding one of their encounters -----------
    candidates = np.flatnonzero(k >= 2)
    n_dup = min(round(EMPI_DUPLICATE_SHARE * persons), len(candidates))
    dup_person = np.sort(rng.choice(candidates, size=n_dup, replace=False)).astype(np.int64)
    dup_enc = first[dup_person] + np.floor(rng.random(n_dup) * k[dup_person]).astype(np.int64)
    n_mrn = persons + n_dup
    mrn_num = rng.permutation(1_000_000 + np.cumsum(rng.integers(1, 40, size=n_mrn)))
    mrn_str = _strings(mrn_num.astype(np.int64), prefix="MRN", width=10)
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
            enc_id[rows] = _strings(enc_int[rows], prefix=prefix, width=width, suffix=suffix)

    dx_obj = _lookup(_DX_CODES, dx[order])
    dx_obj[dx_missing[order]] = None
    encounters = pd.DataFrame(
        {
            "encounter_id": enc_id,
            "mrn": mrn_str[enc_mrn[order]],
            "site": _lookup(SITES, s_site),
            "service_line": _lookup(SERVICE_LINES, service[order]),
            "admit_time": (start_ns + admit_min[order] * minute_ns).view("M8[ns]"),
            "discharge_time": (start_ns + discharge_min[order] * minute_ns).view("M8[ns]"),
            "admission_source": _lookup(ADMISSION_SOURCES, admission[order]),
            "discharge_disposition": _lookup(DISPOSITIONS, disposition[order]),
            "primary_dx": dx_obj,
        }
    )

    # Per-encounter arrays in the sorted order, for the observation tables.
    adm_s = admit_utc[order] // _NS_PER_S
    stay_s = (discharge_utc[order] - admit_utc[order]) // _NS_PER_S
    s_acuity = acuity[order]
    vitals = _vitals(rng, enc_id, adm_s, stay_s, s_acuity, dx_code[order])
    labs = _labs(
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
    zip3_choices = [np.array(z3, dtype=np.int64) for z3 in _SITE_ZIP3]
    zip3 = np.zeros(persons, dtype=np.int64)
    for i, choices in enumerate(zip3_choices):
        rows = home_site == i
        zip3[rows] = choices[np.floor(zip_pick[rows] * len(choices)).astype(np.int64)]
    race_obj = _lookup(RACES, race)
    race_obj[race_missing] = None
    if open_cohort:
        first_day = np.minimum.reduceat(admit_min, first) // _DAY_MIN
        age_days = _unique_birth_days(
            np.random.default_rng([seed, 1]), given, family, first_day, age_days, age_lo, age_hi
        )
        birth_day = first_day - age_days
    else:
        birth_day = -age_days
    birth = (start_ns + birth_day * 86400 * _NS_PER_S).astype(np.int64)
    patients = pd.DataFrame(
        {
            "mrn": mrn_str,
            "patient_name": _FULL_NAMES[given * len(_FAMILY) + family][owner],
            "birth_date": birth[owner].view("M8[ns]"),
            "sex": _lookup(SEXES, sex)[owner],
            "race": race_obj[owner],
            "zip": _strings((zip3 * 100 + zip_tail)[owner], width=5),
        }
    )
    patients = patients.iloc[np.argsort(mrn_num, kind="stable")].reset_index(drop=True)

    window_end_ns = start_ns + days * _DAY_MIN * minute_ns
    merged_ns = np.minimum(discharge_utc[dup_enc] + merged_delay_s * _NS_PER_S, window_end_ns)
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


def _vitals(
    rng: np.random.Generator,
    enc_id: ObjArr,
    adm_s: IntArr,
    stay_s: IntArr,
    acuity: FloatArr,
    dx_code: npt.NDArray[np.str_],
) -> pd.DataFrame:
    n = len(enc_id)
    sets = 1 + _choice(rng, _VITAL_SETS_P, n)
    enc = np.repeat(np.arange(n, dtype=np.int64), sets)
    m = len(enc)
    idx = np.arange(m, dtype=np.int64) - _segment_starts(sets)[enc]
    u = rng.random(m)
    first_off = 300 + np.floor(u * 1501).astype(np.int64)  # 5-30 min after admission
    lo = 31 * _MIN
    later_off = lo + np.floor(u * (stay_s[enc] - _MIN - lo)).astype(np.int64)
    offset = np.where(idx == 0, first_off, later_off)
    offset = _dedupe_offsets(enc, offset)

    a = acuity[enc]
    septic = dx_code[enc] == "A41.9"
    hr = 84.0 + 5.0 * a + 9.0 * septic + 13.0 * rng.standard_normal(m)
    sbp = 128.0 - 3.0 * a + 19.0 * rng.standard_normal(m)
    dbp = 72.0 - 1.5 * a + 11.0 * rng.standard_normal(m)
    temp = 36.9 + 0.2 * a + 0.9 * septic + 0.45 * rng.standard_normal(m)
    rr = 17.0 + 1.3 * a + 2.8 * rng.standard_normal(m)
    spo2 = 97.3 - 0.8 * a - np.abs(1.9 * rng.standard_normal(m))
    sbp = np.clip(np.round(sbp), 60.0, 240.0)
    dbp = np.clip(np.round(np.minimum(dbp, sbp - 15.0)), 30.0, 140.0)
    values = {
        "heart_rate": np.clip(np.round(hr), 30.0, 220.0),
        "sbp": sbp,
        "dbp": dbp,
        "temp_c": np.clip(np.round(temp, 1), 33.0, 42.0),
        "resp_rate": np.clip(np.round(rr), 6.0, 50.0),
        "spo2": np.clip(np.round(spo2), 60.0, 100.0),
    }
    missing = rng.random((m, len(_VITAL_COLUMNS))) < _VITAL_MISSING
    for j, col in enumerate(_VITAL_COLUMNS):
        values[col][missing[:, j]] = np.nan
    delay_s = np.round(60.0 * np.minimum(np.exp(np.log(8.0) + 0.9 * rng.standard_normal(m)), 720))
    event_s = adm_s[enc] + offset
    recorded_s = event_s + np.maximum(delay_s.astype(np.int64), 30)
    out = pd.DataFrame(
        {
            "encounter_id": enc_id[enc],
            "event_time": _utc_seconds(event_s),
            "recorded_time": _utc_seconds(recorded_s),
            **values,
        }
    )
    return out


def _dedupe_offsets(enc: IntArr, offset: IntArr) -> IntArr:
    """Offsets ordered within each encounter and made unique there (ties move 1 s later).

    ``enc`` must be grouped and non-decreasing; row ``i`` of the result belongs to ``enc[i]``.
    Nudging a tie one second later keeps each encounter's offsets sorted, so one sort suffices.
    """
    off = np.asarray(offset[np.lexsort((offset, enc))], dtype=np.int64)
    same_enc = enc[1:] == enc[:-1]
    while True:
        dup = same_enc & (off[1:] == off[:-1])
        if not dup.any():
            return off
        off[1:] += dup


def _labs(
    rng: np.random.Generator,
    enc_id: ObjArr,
    adm_s: IntArr,
    stay_s: IntArr,
    site: IntArr,
    diabetic: BoolArr,
    truth: FloatArr,
) -> pd.DataFrame:
    n = len(enc_id)
    p = np.empty((n, 5), dtype=np.float64)
    p[:, _GLU] = 0.92
    p[:, _CREAT] = 0.72
    p[:, _HBA1C] = np.where(diabetic, 0.75, 0.20)
    p[:, _NA] = 0.70
    p[:, _HGB] = 0.52
    drawn = rng.random((n, 5)) < p
    drawn[:, _GLU] |= ~drawn.any(axis=1)
    panel = 600 + np.floor(rng.random(n) * 6601).astype(np.int64)  # 10-120 min after admit
    enc, code = np.nonzero(drawn)
    enc = enc.astype(np.int64)
    code = code.astype(np.int64)
    m = len(enc)
    first_of_enc = np.ones(m, dtype=bool)
    first_of_enc[1:] = enc[1:] != enc[:-1]
    in_panel = first_of_enc | (rng.random(m) < np.where(code == _HBA1C, 0.5, 0.7))
    lo = panel[enc] + 30 * _MIN
    later = lo + np.floor(rng.random(m) * (stay_s[enc] - _MIN - lo)).astype(np.int64)
    offset = np.where(in_panel, panel[enc], later)
    order = np.lexsort((code, offset, enc))
    enc, code, offset = enc[order], code[order], offset[order]

    value = truth[enc, code]
    decimals = np.array([0, 2, 1, 0, 1])[code]
    value = np.where(
        decimals == 0,
        np.round(value),
        np.where(decimals == 1, np.round(value, 1), np.round(value, 2)),
    )
    unit = _lookup(_CANONICAL_UNITS, code)
    south = site[enc] == _SOUTH
    glu_si = south & (code == _GLU)
    creat_si = south & (code == _CREAT)
    raw = truth[enc, code]
    value[glu_si] = np.round(raw[glu_si] / GLUCOSE_MGDL_PER_MMOLL, 1)
    value[creat_si] = np.round(raw[creat_si] / CREATININE_MGDL_PER_UMOLL)
    unit[glu_si] = "mmol/L"
    unit[creat_si] = "umol/L"
    event_s = adm_s[enc] + offset
    recorded_s = event_s + 30 * _MIN + np.floor(rng.random(m) * (210 * _MIN + 1)).astype(np.int64)
    return pd.DataFrame(
        {
            "encounter_id": enc_id[enc],
            "lab_code": _lookup(LAB_CODES, code),
            "value": value.astype(np.float64),
            "unit": unit,
            "event_time": _utc_seconds(event_s),
            "recorded_time": _utc_seconds(recorded_s),
        }
    )


# --- writing -----------------------------------------------------------------------------------


def write_tables(tables: dict[str, pd.DataFrame], out_dir: Path, params: dict[str, Any]) -> Path:
    """Write each table as ``out_dir/<name>.parquet`` and ``extract.json``; return ``out_dir``.

    Bytes are deterministic for identical frames: no pandas index is written, rows keep their
    order, and the codec is zstd. Any dict of frames is accepted (fault scenarios use this too).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        table = pa.Table.from_pandas(df, preserve_index=False)
        pq.write_table(table, out_dir / f"{name}.parquet", compression="zstd")
    meta = {"source": "synthetic", "generator": GENERATOR, **params}
    (out_dir / "extract.json").write_text(
        json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
    )
    return out_dir


def generate_extract(
    out_dir: Path, n_encounters: int, seed: int = 7, start: str = "2024-01-01", days: int = 365
) -> Path:
    """Write the five tables as parquet plus ``extract.json`` into ``out_dir``; return it."""
    tables = generate_tables(n_encounters, seed=seed, start=start, days=days)
    params = {"n_encounters": int(n_encounters), "seed": int(seed), "start": start, "days": days}
    return write_tables(tables, Path(out_dir), params)
