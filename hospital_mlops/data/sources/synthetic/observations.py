"""The synthetic extract's observation tables: vitals (1-4 sets per encounter) and labs (a panel
after admission, then later draws; SOUTH reports glucose and creatinine in SI units)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pandas as pd

from hospital_mlops.data.sources.synthetic.arrays import (
    BoolArr,
    FloatArr,
    IntArr,
    ObjArr,
    choose,
    labels_at,
    segment_starts,
)
from hospital_mlops.data.sources.synthetic.times import MINUTE, utc_from_seconds
from hospital_mlops.data.sources.synthetic.vocabulary import (
    CANONICAL_UNITS,
    CREATININE_MGDL_PER_UMOLL,
    GLUCOSE_MGDL_PER_MMOLL,
    LAB_CODES,
    SITES,
)

_SOUTH = SITES.index("SOUTH")
_GLU, _CREAT, _HBA1C, _NA, _HGB = range(5)  # indices into LAB_CODES

_VITAL_COLUMNS = ("heart_rate", "sbp", "dbp", "temp_c", "resp_rate", "spo2")
_VITAL_MISSING = 0.015
_VITAL_SETS_P = (0.35, 0.35, 0.20, 0.10)  # 1..4 sets per encounter, mean 2.05


def vitals_table(
    rng: np.random.Generator,
    enc_id: ObjArr,
    adm_s: IntArr,
    stay_s: IntArr,
    acuity: FloatArr,
    dx_code: npt.NDArray[np.str_],
) -> pd.DataFrame:
    n = len(enc_id)
    sets = 1 + choose(rng, _VITAL_SETS_P, n)
    enc = np.repeat(np.arange(n, dtype=np.int64), sets)
    m = len(enc)
    idx = np.arange(m, dtype=np.int64) - segment_starts(sets)[enc]
    u = rng.random(m)
    first_off = 300 + np.floor(u * 1501).astype(np.int64)  # 5-30 min after admission
    lo = 31 * MINUTE
    later_off = lo + np.floor(u * (stay_s[enc] - MINUTE - lo)).astype(np.int64)
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
            "event_time": utc_from_seconds(event_s),
            "recorded_time": utc_from_seconds(recorded_s),
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


def labs_table(
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
    lo = panel[enc] + 30 * MINUTE
    later = lo + np.floor(rng.random(m) * (stay_s[enc] - MINUTE - lo)).astype(np.int64)
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
    unit = labels_at(CANONICAL_UNITS, code)
    south = site[enc] == _SOUTH
    glu_si = south & (code == _GLU)
    creat_si = south & (code == _CREAT)
    raw = truth[enc, code]
    value[glu_si] = np.round(raw[glu_si] / GLUCOSE_MGDL_PER_MMOLL, 1)
    value[creat_si] = np.round(raw[creat_si] / CREATININE_MGDL_PER_UMOLL)
    unit[glu_si] = "mmol/L"
    unit[creat_si] = "umol/L"
    event_s = adm_s[enc] + offset
    recorded_s = (
        event_s + 30 * MINUTE + np.floor(rng.random(m) * (210 * MINUTE + 1)).astype(np.int64)
    )
    return pd.DataFrame(
        {
            "encounter_id": enc_id[enc],
            "lab_code": labels_at(LAB_CODES, code),
            "value": value.astype(np.float64),
            "unit": unit,
            "event_time": utc_from_seconds(event_s),
            "recorded_time": utc_from_seconds(recorded_s),
        }
    )
