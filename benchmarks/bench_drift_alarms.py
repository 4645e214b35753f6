"""Evaluate the drift thresholds (hospital_mlops/drift_thresholds.py) on the real diabetes130
extract: false alarms on stable windows, power on faults, and what the real windows show.

First version (the monitoring-without-noise issue, item 4), diabetes130 only:

* the thresholds are calibrated on the earlier half of the validated (test) period, in time
  order (``encounter_order``), in consecutive windows of ``--window`` encounters, at the
  declared ``--rate``;
* **stable**: the later half's consecutive windows (held back: never part of the calibration),
  with the served score; the synthetic source's long no-fault stream is not run yet (listed under
  ``not_run``);
* **scenarios**: diabetes130 faults as the detector sees them (the model's inputs recomputed
  from a faulty feed), each applied to every held-back window: ``detected_first_window`` counts
  the windows with any alert, ``expected_statistic_flagged`` those where the statistic the
  fault moves is among them. The synthetic source's scenarios and a silent feed (a volume
  statistic) are not run yet;
* **real_windows**: each held-back window and each training-period window (an older era, with
  another case mix and coding), with what is flagged and by how much, and the realized AUROC
  (Poisson-bootstrap CI), ECE and observed/expected events (exact Poisson CI).

Prints the JSON (``--json``: only the JSON) and saves benchmarks/results/drift_alarms.json.

Usage: python benchmarks/bench_drift_alarms.py [--rate 0.02] [--window 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import machine
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drift_alarms.json"
REPLICATES = 200
Fault = Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]


def _assay_shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.assign(num_lab_procedures=frame["num_lab_procedures"] + 30)


def _diagnoses_truncated(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.assign(number_diagnoses=1.0)


def _race_null_burst(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    race = frame["race"].astype(object).copy()
    race[rng.random(len(frame)) < 0.2] = None
    return frame.assign(race=race)


def _new_admission_source(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    source = frame["admission_source"].astype(object).copy()
    source[rng.random(len(frame)) < 0.1] = "99"
    return frame.assign(admission_source=source)


def _hba1c_dropped(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.assign(hba1c_result=None)


# name → (the fault, the statistic it must move)
SCENARIOS: dict[str, tuple[Fault, str]] = {
    "assay_shift (lab count +30)": (_assay_shift, "num_lab_procedures"),
    "diagnoses_truncated (principal diagnosis only)": (_diagnoses_truncated, "number_diagnoses"),
    "null_burst (race blank for 20%)": (_race_null_burst, "race"),
    "new_category (admission source 99 for 10%)": (_new_admission_source, "admission_source"),
    "dropped input (HbA1c no longer sent)": (_hba1c_dropped, "hba1c_result"),
}


def _ece(y: np.ndarray, risk: np.ndarray, bins: int = 10) -> float:
    edges = np.unique(np.quantile(risk, np.linspace(0, 1, bins + 1)))
    band = np.clip(np.searchsorted(edges, risk, side="right") - 1, 0, max(len(edges) - 2, 0))
    total = 0.0
    for b in np.unique(band):
        member = band == b
        total += member.sum() * abs(y[member].mean() - risk[member].mean())
    return float(total / len(y))


def _observed_to_expected(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    observed, expected = int(y.sum()), float(risk.sum())
    low = stats.chi2.ppf(0.025, 2 * observed) / 2 if observed else 0.0
    high = stats.chi2.ppf(0.975, 2 * observed + 2) / 2
    return {
        "value": round(observed / expected, 4),
        "ci": [round(low / expected, 4), round(high / expected, 4)],
    }


def _outcomes(window: pd.DataFrame, label: str) -> dict[str, Any]:
    from hospital_mlops.monitoring.auroc_bootstrap import auroc_with_ci

    y = window[label].to_numpy(dtype="int64")
    risk = window["risk"].to_numpy(dtype="float64")
    auroc, ci = auroc_with_ci(y, risk, REPLICATES, 0, 0.95)
    return {
        "auroc": {"value": round(auroc, 4), "ci": ci},
        "ece": round(_ece(y, risk), 4),
        "observed_to_expected": _observed_to_expected(y, risk),
    }


def _flag(found: Any) -> dict[str, Any]:
    return {
        "name": found.name,
        "magnitude": round(found.magnitude, 4),
        "threshold": round(found.threshold, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.02, help="declared false-alarm rate")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    from hospital_mlops.catalog import load_catalog
    from hospital_mlops.data_faults import ReferenceProfile, data_faults
    from hospital_mlops.drift_thresholds import (
        calibrate,
        consecutive_windows,
        exceedances,
        kinds_of,
    )
    from hospital_mlops.features import build_features, feature_set_for
    from hospital_mlops.normalize import HmacKey, normalize_extract
    from hospital_mlops.sources.extract import default_extract, read_extract
    from hospital_mlops.splits import temporal_split
    from hospital_mlops.train import train_risk_model
    from hospital_mlops.use_case import TrainingConfig, load_use_case

    spec = load_catalog().source("diabetes130")
    fs = feature_set_for("diabetes130")
    normalized, _ = normalize_extract(
        read_extract(default_extract("diabetes130", spec), spec), spec, HmacKey(b"b" * 40, False)
    )
    features, _ = build_features("diabetes130", normalized)
    split = temporal_split(features, load_use_case().for_source("diabetes130").split, fs.label)
    model = train_risk_model(split.train, split.validation, fs, TrainingConfig(max_rounds=100))
    names = [f.name for f in fs.features]
    kinds = kinds_of([(f.name, f.kind) for f in fs.features])

    def scored(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.sort_values("encounter_order", kind="stable")
        frame = rows[[*names, fs.label, "encounter_order"]].reset_index(drop=True)
        frame["risk"] = model.predict_risk(rows, fs)
        return frame

    test, train = scored(split.test), scored(split.train)
    half = len(test) // 2
    baseline, held_back = test.iloc[:half], test.iloc[half:]
    watched = [*names, "risk"]
    thresholds = calibrate(baseline[watched], kinds, window=args.window, false_alarm_rate=args.rate)
    reference = baseline[watched]

    profile = ReferenceProfile.of(reference, kinds)

    def alerts(window: pd.DataFrame) -> list[Any]:
        return exceedances(reference, window[watched], kinds, thresholds)

    def act(window: pd.DataFrame) -> list[Any]:
        return data_faults(window[names], kinds, profile)

    stable_windows = consecutive_windows(held_back, args.window)
    stable_alarms = [alerts(w) + act(w) for w in stable_windows]

    scenarios = []
    rng = np.random.default_rng(17)
    for name, (fault, expected) in SCENARIOS.items():
        faulty = [fault(w.copy(), rng) for w in stable_windows]
        found = [alerts(w) for w in faulty]
        acted = [act(w) for w in faulty]
        scenarios.append(
            {
                "name": name,
                "windows": len(found),
                "detected_first_window": sum(
                    bool(f or a) for f, a in zip(found, acted, strict=True)
                ),
                "act_tier": sum(bool(a) for a in acted),
                "act_rules": sorted({f"{d.input}: {d.rule}" for a in acted for d in a}),
                "expected_statistic_flagged": sum(
                    any(e.name.split(".")[0] == expected for e in f) for f in found
                ),
            }
        )

    real = []
    for period, rows in (("test_later_half", held_back), ("train", train)):
        for window in consecutive_windows(rows, args.window):
            flagged = alerts(window)
            real.append(
                {
                    "period": period,
                    "start": int(window["encounter_order"].iloc[0]),
                    "flagged": [_flag(e) for e in flagged],
                    "act": [d.detail for d in act(window)],
                    **_outcomes(window, fs.label),
                }
            )
    train_flags = Counter(f["name"] for r in real if r["period"] == "train" for f in r["flagged"])
    report = {
        "declared_false_alarm_rate": args.rate,
        "window": args.window,
        "baseline": {
            "source": "diabetes130: earlier half of the validated (test) period",
            "rows": len(baseline),
            "windows": thresholds.baseline_windows,
        },
        "stable": {
            "source": "diabetes130: later half of the validated period (held back)",
            "windows": len(stable_alarms),
            "false_alarms": sum(bool(a) for a in stable_alarms),
            "act_tier_alarms": sum(bool(act(w)) for w in stable_windows),
        },
        "scenarios": scenarios,
        "real_windows": real,
        "train_period_flags": dict(train_flags.most_common()),
        "thresholds": thresholds.to_json(),
        "not_run": [
            "stable: the synthetic source's long no-fault stream",
            "scenarios: the synthetic source's eleven; a silent feed (needs a volume statistic)",
        ],
        "command": "python benchmarks/bench_drift_alarms.py"
        + (f" --rate {args.rate}" if args.rate != 0.02 else "")
        + (f" --window {args.window}" if args.window != 1000 else ""),
        "machine": machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report))
        return
    summary = ("stable", "scenarios", "train_period_flags")
    print(json.dumps({k: report[k] for k in summary}, indent=2))
    for row in real:
        if row["period"] == "test_later_half":
            print(row["start"], [f["name"] for f in row["flagged"]], row["auroc"], row["ece"],
                  row["observed_to_expected"])  # fmt: skip


if __name__ == "__main__":
    main()
