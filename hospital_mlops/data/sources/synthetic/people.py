"""The synthetic extract's people: given and family names, encounters per person (drawn with a
latent frailty), and identities made unique (one person per name and birth date)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from hospital_mlops.data.sources.synthetic.arrays import FloatArr, IntArr

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
FAMILY_NAMES = (
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
FULL_NAMES = np.array([f"{g} {f}" for g in _GIVEN for f in FAMILY_NAMES], dtype=object)

MEAN_ENCOUNTERS_PER_PERSON = 1.4


def chain_lengths(rng: np.random.Generator, n: int, kmax: int) -> tuple[FloatArr, IntArr]:
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


def unique_identities(
    rng: np.random.Generator, sex: IntArr, age_days: IntArr, lo: int, hi: int
) -> tuple[IntArr, IntArr, IntArr]:
    """Given-name index, family index and age in days with (name, birth date) unique."""
    n = len(sex)
    n_f, n_m, n_fam = len(_GIVEN_F), len(_GIVEN_M), len(FAMILY_NAMES)

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


def unique_birth_days(
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
    n_fam = len(FAMILY_NAMES)
    while True:
        key = (given * n_fam + family) * 10_000_000 + (first_day - days + 5_000_000)
        dup = pd.Index(key).duplicated(keep="first")
        if not dup.any():
            return days
        rows = np.flatnonzero(dup)
        days[rows] = np.clip(days[rows] + rng.integers(-200, 201, size=len(rows)), lo, hi)
