"""The synthetic extract's vocabularies and their shares: sites (time zones, ZIP prefixes),
service lines, admission sources, discharge dispositions, principal diagnoses, lab codes and
units, sexes and races."""

from __future__ import annotations

import numpy as np

SITES = ("NORTH", "EAST", "SOUTH", "WEST")
SITE_SHARES = (0.35, 0.25, 0.25, 0.15)
SITE_TIMEZONES = {
    "NORTH": "America/New_York",
    "EAST": "America/New_York",
    "SOUTH": "America/Chicago",
    "WEST": "America/Los_Angeles",
}
# First three ZIP digits by site (residents mostly live near their home site).
SITE_ZIP3 = (
    (100, 101, 102, 103, 104, 112, 113),
    (21, 22, 23, 24, 19, 20),
    (606, 607, 608, 600, 601),
    (900, 902, 910, 913, 917),
)

SERVICE_LINES = ("MEDICINE", "SURGERY", "CARDIOLOGY", "ORTHOPEDICS", "ONCOLOGY")
SERVICE_SHARES = (0.40, 0.20, 0.17, 0.10, 0.13)
SERVICE_LOS_EFFECT = (0.0, 0.10, -0.10, 0.05, 0.20)

ADMISSION_SOURCES = ("EMERGENCY", "REFERRAL", "TRANSFER", "ELECTIVE")
# P(admission source | service line), rows in SERVICE_LINES order.
ADMISSION_BY_SERVICE = np.array(
    [
        [0.70, 0.12, 0.10, 0.08],
        [0.35, 0.15, 0.08, 0.42],
        [0.60, 0.15, 0.12, 0.13],
        [0.30, 0.12, 0.06, 0.52],
        [0.40, 0.25, 0.10, 0.25],
    ]
)

DISPOSITIONS = ("HOME", "HOME_HEALTH", "SNF", "REHAB", "AMA", "EXPIRED", "HOSPICE")

# Principal diagnoses (ICD-10-CM) by service line.
DX_BY_SERVICE: tuple[tuple[str, ...], ...] = (
    (
        "A41.9", "J44.1", "J18.9", "N17.9", "E11.65", "N18.4",
        "K92.2", "N39.0", "E87.1", "J96.01", "D64.9",
    ),
    ("K35.80", "K80.00", "K56.609", "K57.32", "K65.0", "K40.90"),
    ("I50.9", "I21.4", "I48.91", "I50.23", "I20.0", "I63.9"),
    ("S72.001A", "S72.141A", "M17.11", "M16.11"),
    ("C34.90", "C18.9", "C50.919", "C61", "D70.1"),
)  # fmt: skip
DX_CODES: tuple[str, ...] = tuple(c for codes in DX_BY_SERVICE for c in codes)
DX_MISSING_SHARE = 0.003

LAB_CODES = ("GLU", "CREAT", "HBA1C", "NA", "HGB")
CANONICAL_UNITS = ("mg/dL", "mg/dL", "%", "mmol/L", "g/dL")
GLUCOSE_MGDL_PER_MMOLL = 18.016
CREATININE_MGDL_PER_UMOLL = 0.0113100

SEXES = ("F", "M", "U")
SEX_SHARES = (0.519, 0.479, 0.002)
RACES = ("White", "Black", "Hispanic", "Asian", "Other")
RACE_SHARES = (0.60, 0.18, 0.12, 0.06, 0.04)
RACE_MISSING_SHARE = 0.02
