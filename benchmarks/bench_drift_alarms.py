"""Evaluate the tiered drift alerts (hospital_mlops/drift/alerts.py) on two sources: false
alarms on stable windows, power on faults in their first window, and what the real diabetes130
windows show.

Every window is judged as the serving detector judges it: the calibrated magnitudes
(investigate tier) and the hard data-fault rules (act tier), with the requests the endpoint
refused counted beside the rows it scored.

* **diabetes130** (the real extract, in ``encounter_order``): the model trains on the training
  period; the thresholds are calibrated on the earlier half of the validated (test) period; the
  later half's consecutive windows are held back (never part of the calibration). The extract
  has no calendar dates, so a deployment seeing one window a week is assumed for the silent-feed
  rule (``--window`` encounters per 168 h).
* **synthetic** (benchmarks/drift_synthetic.py): a seeded five-year extract in discharge order;
  the thresholds are calibrated on 30 windows after the model's training slice, and every later
  window (hundreds) is the long no-fault stream.
* **scenarios**: each fault of hospital_mlops/data/faults.py that the source has, as the serving
  endpoint meets it (a recoded category or an impossible value is refused with a 4xx; a renamed
  or dropped field reaches the model empty; …), applied to consecutive held-back windows.
  ``detected_by.drift_alert`` counts the windows in which the fault, starting there, is alerted
  on; ``windows_to_detect`` is the median number of windows until the first alert.
* **pipeline gates** (synthetic): a synthetic fault is a fault of a delivery, so each is also
  sent through the data pipeline's gates on 40 seeded extracts (one per window, paired), beside
  40 clean ones (the gates' false refusals). ``detected_first_window`` counts the draws caught by
  either layer: the delivery refused, or the alert in the first serving window. diabetes130
  faults are serving faults only, counted by the alerts alone.
* **real_windows**: each diabetes130 held-back and training-period window, with its alerts and
  the realized AUROC (Poisson-bootstrap CI), ECE and observed/expected events (exact Poisson CI).

Prints the JSON (``--json``: only the JSON) and saves benchmarks/results/drift_alarms.json.

Usage: python benchmarks/bench_drift_alarms.py [--rate 0.02] [--window 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from bench_common import machine
from scipy import stats

from hospital_mlops.drift.alerts import DriftAlert, DriftBaseline, assess_window, build_baseline
from hospital_mlops.drift.thresholds import Kind, consecutive_windows, kinds_of

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "drift_alarms.json"
REPLICATES = 200
WEEK_HOURS = 168.0
SCENARIO_WINDOWS = 40  # consecutive held-back synthetic windows each scenario starts in
D130_DRAWS = 5  # random draws of each diabetes130 fault per held-back window
GATE_ENCOUNTERS = 3_000  # the extract each synthetic fault is also sent through the pipeline on


@dataclass
class Case:
    """One window as the detector meets it."""

    frame: pd.DataFrame  # the scored rows: inputs and risk
    refused: dict[str, int] = field(default_factory=dict)  # requests refused, by field
    keys: pd.Series | None = None  # the rows' encounter keys
    hours: float | None = None  # the time the window took to fill


@dataclass
class Detector:
    baseline: DriftBaseline
    reference: pd.DataFrame
    watched: list[str]

    def judge(self, case: Case) -> list[DriftAlert]:
        return assess_window(
            self.baseline,
            self.reference,
            case.frame[self.watched],
            refused=case.refused,
            keys=case.keys,
            hours=case.hours,
        )


Fault = Callable[[Case, np.random.Generator], Case]


# ------------------------------------------------------------------------ diabetes130's faults


def _refuse(case: Case, rows: np.ndarray, field_name: str) -> Case:
    """The endpoint refuses these rows' requests (a field-level 4xx, scoring.py)."""
    keep = np.ones(len(case.frame), dtype=bool)
    keep[rows] = False
    refused = Counter(case.refused)
    refused[field_name] += int((~keep).sum())
    keys = None if case.keys is None else case.keys[keep].reset_index(drop=True)
    return Case(case.frame[keep].reset_index(drop=True), dict(refused), keys, case.hours)


def _share(case: Case, rng: np.random.Generator, share: float) -> np.ndarray:
    return np.flatnonzero(rng.random(len(case.frame)) < share)


def _d130_assay(case: Case, rng: np.random.Generator) -> Case:
    labs = case.frame["num_lab_procedures"] + 30
    shifted = Case(case.frame.assign(num_lab_procedures=labs), case.refused, case.keys, case.hours)
    return _refuse(shifted, np.flatnonzero(labs.to_numpy() > 200), "num_lab_procedures")


def _d130_truncated(case: Case, rng: np.random.Generator) -> Case:
    return Case(case.frame.assign(number_diagnoses=1.0), case.refused, case.keys, case.hours)


def _d130_null_burst(case: Case, rng: np.random.Generator) -> Case:
    race = case.frame["race"].astype(object).copy()
    race[rng.random(len(race)) < 0.2] = None
    return Case(case.frame.assign(race=race), case.refused, case.keys, case.hours)


def _d130_new_category(case: Case, rng: np.random.Generator) -> Case:
    return _refuse(case, _share(case, rng, 0.1), "admission_source_id")


def _d130_a1c_absent(case: Case, rng: np.random.Generator) -> Case:
    return Case(case.frame.assign(hba1c_result=None), case.refused, case.keys, case.hours)


def _d130_duplicates(case: Case, rng: np.random.Generator) -> Case:
    again = _share(case, rng, 0.01)
    frame = pd.concat([case.frame, case.frame.iloc[again]], ignore_index=True)
    assert case.keys is not None
    keys = pd.concat([case.keys, case.keys.iloc[again]], ignore_index=True)
    return Case(frame, case.refused, keys, case.hours)


def _d130_retype(case: Case, rng: np.random.Generator) -> Case:
    return _refuse(case, np.arange(len(case.frame)), "time_in_hospital")


def _d130_out_of_range(case: Case, rng: np.random.Generator) -> Case:
    return _refuse(case, _share(case, rng, 0.01), "time_in_hospital")


def _silent(case: Case, rng: np.random.Generator) -> Case:
    """The interface engine stalls: 3% of a window's volume arrives in the window's time."""
    kept = case.frame.iloc[: max(1, len(case.frame) * 3 // 100)].reset_index(drop=True)
    keys = None if case.keys is None else case.keys.iloc[: len(kept)].reset_index(drop=True)
    return Case(kept, {}, keys, case.hours)


# name (as in hospital_mlops/data/faults.py, where it has one) → (what it is, the fault)
D130_SCENARIOS: dict[str, tuple[str, Fault]] = {
    "assay_shift": ("lab count +30 (above 200 refused)", _d130_assay),
    "diagnoses_truncated": ("principal diagnosis only (count 1)", _d130_truncated),
    "null_burst": ("race blank for 20%", _d130_null_burst),
    "new_category": ("admission source 99 for 10% (refused)", _d130_new_category),
    "schema_drop / schema_rename": ("A1Cresult no longer sent under its name", _d130_a1c_absent),
    "duplicates": ("1% of encounters resent", _d130_duplicates),
    "schema_retype": ("length of stay sent as text ('3 days'; refused)", _d130_retype),
    "out_of_range": ("length of stay 45 days for 1% (refused)", _d130_out_of_range),
    "silent_feed": ("the interface engine stalls: 3% of a week's volume", _silent),
}


# ------------------------------------------------------------------------------ outcomes


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


def _clopper_pearson(k: int, n: int) -> list[float]:
    low = float(stats.beta.ppf(0.025, k, n - k + 1)) if k else 0.0
    high = float(stats.beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return [round(low, 4), round(high, 4)]


def _flag(alert: DriftAlert) -> dict[str, Any]:
    return {
        "tier": alert.tier,
        "statistic": alert.statistic,
        "name": alert.subject,
        "magnitude": round(alert.magnitude, 4),
        "threshold": round(alert.threshold, 4),
    }


# ------------------------------------------------------------------------------ evaluation


def _scenario_row(
    source: str,
    name: str,
    what: str,
    judged: Sequence[list[DriftAlert]],
    hours: float | None,
    gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One fault's power. With ``gate`` (the fault's pipeline-gate draws, paired one to one with
    the windows), a draw counts as detected when either layer catches it: the delivery's gate
    refuses it, or the serving alerts fire in its first window."""
    detected = [bool(a) for a in judged]
    either = detected
    if gate is not None:
        refused = gate["refused_per_draw"]
        assert len(refused) == len(detected), "gate draws and windows are paired one to one"
        either = [d or r for d, r in zip(detected, refused, strict=True)]
    waits = []
    for start in range(len(detected)):
        later = [j for j in range(start, len(detected)) if detected[j]]
        if later:
            waits.append(later[0] - start + 1)
    median_wait = float(np.median(waits)) if waits else None
    return {
        "name": f"{source}: {name}",
        "fault": what,
        "windows": len(judged),
        "detected_first_window": sum(either),
        "detected_by": {
            "drift_alert": sum(detected),
            "pipeline_gate": None if gate is None else gate["refused"],
        },
        "act_tier": sum(any(a.tier == "act" for a in alerts) for alerts in judged),
        "statistics": dict(
            Counter(f"{a.tier}: {a.statistic}" for alerts in judged for a in alerts).most_common()
        ),
        "windows_to_detect": median_wait,
        "hours_to_detect": None if median_wait is None or hours is None else median_wait * hours,
        "pipeline_gate": gate,
    }


def evaluate_diabetes130(window: int, rate: float) -> dict[str, Any]:
    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.normalize import HmacKey, normalize_extract
    from hospital_mlops.data.sources.extract import default_extract, read_extract
    from hospital_mlops.data.splits import temporal_split
    from hospital_mlops.features import build_features, feature_set_for
    from hospital_mlops.model.train import train_risk_model
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
    kinds: dict[str, Kind] = kinds_of([(f.name, f.kind) for f in fs.features])

    def scored(rows: pd.DataFrame) -> pd.DataFrame:
        rows = rows.sort_values("encounter_order", kind="stable")
        frame = rows[[*names, fs.label, "encounter_order", "encounter_token"]]
        frame = frame.reset_index(drop=True)
        frame["risk"] = model.predict_risk(rows, fs)
        return frame

    test, train = scored(split.test), scored(split.train)
    half = len(test) // 2
    baseline, held_back = test.iloc[:half], test.iloc[half:]
    watched = [*names, "risk"]
    hours = WEEK_HOURS * len(baseline) / window  # one window a week (the extract has no dates)
    detector = Detector(
        build_baseline(baseline[watched], kinds, window=window, false_alarm_rate=rate, hours=hours),
        baseline[watched],
        watched,
    )

    def case(rows: pd.DataFrame) -> Case:
        return Case(rows.reset_index(drop=True), {}, rows["encounter_token"], WEEK_HOURS)

    stable = [case(w) for w in consecutive_windows(held_back, window)]
    stable_alerts = [detector.judge(c) for c in stable]
    rng = np.random.default_rng(17)
    # each random fault drawn several times per window: nine held-back windows alone cannot
    # tell 95% from 89%
    scenarios = [
        _scenario_row(
            "diabetes130", name, what,
            [detector.judge(fault(c, rng)) for _ in range(D130_DRAWS) for c in stable],
            WEEK_HOURS,
        )
        for name, (what, fault) in D130_SCENARIOS.items()
    ]  # fmt: skip
    real = []
    for period, rows in (("test_later_half", held_back), ("train", train)):
        for w in consecutive_windows(rows, window):
            alerts = detector.judge(case(w))
            real.append(
                {
                    "period": period,
                    "start": int(w["encounter_order"].iloc[0]),
                    "flagged": [_flag(a) for a in alerts],
                    **_outcomes(w, fs.label),
                }
            )
    return {
        "baseline": {
            "source": "diabetes130: earlier half of the validated (test) period",
            "rows": len(baseline),
            "windows": detector.baseline.thresholds.baseline_windows,
        },
        "stable": _stable("diabetes130: later half of the validated period", stable_alerts),
        "scenarios": scenarios,
        "real_windows": real,
        "thresholds": detector.baseline.thresholds.to_json(),
    }


def evaluate_synthetic(window: int, rate: float) -> dict[str, Any]:
    from drift_synthetic import build_stream, scenario_injector, serving_view, synthetic_scenarios

    from hospital_mlops.data.faults import SCENARIOS
    from hospital_mlops.features import feature_set_for

    gates = pipeline_gates(synthetic_scenarios(), SCENARIO_WINDOWS)  # first: fails in seconds
    stream = build_stream(window)
    kinds: dict[str, Kind] = kinds_of(
        [(f.name, f.kind) for f in feature_set_for("synthetic").features]
    )
    watched = [*stream.names, "risk"]

    def hours_of(rows: pd.DataFrame) -> float:
        span = rows["discharge_time"].max() - rows["discharge_time"].min()
        return float(span.total_seconds() / 3600)

    detector = Detector(
        build_baseline(
            stream.baseline[watched], kinds, window=window, false_alarm_rate=rate,
            hours=hours_of(stream.baseline),
        ),
        stream.baseline[watched],
        watched,
    )  # fmt: skip

    windows = consecutive_windows(stream.held_back, window)
    stable = [
        Case(w.reset_index(drop=True), {}, w["encounter_token"].reset_index(drop=True),
             hours_of(w))
        for w in windows
    ]  # fmt: skip
    stable_alerts = [detector.judge(c) for c in stable]
    per_window_hours = float(np.median([c.hours for c in stable if c.hours]))

    scenarios = []
    first = windows[:SCENARIO_WINDOWS]
    for name in synthetic_scenarios():
        what = SCENARIOS[name].description
        field_name = SCENARIOS[name].sources["synthetic"][1].column
        if name == "empty_extract":  # a delivery with no rows: at serving, a silent feed
            rng = np.random.default_rng(5)
            judged = [detector.judge(_silent(c, rng)) for c in stable[:SCENARIO_WINDOWS]]
            scenarios.append(
                _scenario_row("synthetic", "empty_extract (silent feed)", what, judged,
                              per_window_hours, gates[name])
            )  # fmt: skip
            continue
        injector = scenario_injector(name)
        assert injector is not None
        faulty, refused = serving_view(injector(stream.raw, np.random.default_rng(5)), stream.raw)
        faulty = stream.score(faulty)
        by_token = faulty.groupby("encounter_token", sort=False).indices
        judged = []
        for w in first:
            tokens = w["encounter_token"].tolist()
            rows = [i for t in tokens for i in by_token.get(t, ())]
            frame = faulty.iloc[rows].reset_index(drop=True)
            gone = sum(t in refused for t in tokens)
            frame = frame[~frame["encounter_token"].isin(refused)].reset_index(drop=True)
            judged.append(
                detector.judge(
                    Case(frame, {field_name: gone} if gone else {},
                         frame["encounter_token"], hours_of(w))
                )
            )  # fmt: skip
        scenarios.append(
            _scenario_row("synthetic", name, what, judged, per_window_hours, gates[name])
        )
    return {
        "baseline": {
            "source": "synthetic: 30 windows after the model's training slice",
            "rows": len(stream.baseline),
            "windows": detector.baseline.thresholds.baseline_windows,
        },
        "stable": _stable(
            "synthetic: every later window (the long no-fault stream)", stable_alerts
        ),
        "scenarios": scenarios,
        "pipeline_gate_clean": gates["clean"],
        "thresholds": detector.baseline.thresholds.to_json(),
    }


def pipeline_gates(names: Sequence[str], draws: int) -> dict[str, Any]:
    """Each fault also sent through the data pipeline (ingest → normalize → validate → features →
    publish), as a delivery meets it before its snapshot is published: ``draws`` clean synthetic
    extracts (each its own seed), each sent clean and with every fault injected (the injection
    seeded by the draw). A fault refused there never reaches a snapshot, so a model never meets
    it. The clean deliveries measure the gates' own false refusals."""
    import shutil
    import tempfile

    from hospital_mlops.data.catalog import load_catalog
    from hospital_mlops.data.faults import SCENARIOS, materialize_scenario
    from hospital_mlops.data.normalize import DEMO_HMAC_KEY, HMAC_KEY_ENV
    from hospital_mlops.data.sources.synthetic.parquet_extract import generate_extract
    from hospital_mlops.steps import data as data_steps

    # synthetic data is not PHI: the labelled demo key, unless a key is already set
    os.environ.setdefault(HMAC_KEY_ENV, DEMO_HMAC_KEY)
    spec = load_catalog().source("synthetic")

    def send(extract: Path, work: Path) -> tuple[bool, str | None, set[str]]:
        ctx = data_steps.RunContext("synthetic", "readmission_risk_model", work / "ctx", "bench")
        summary = data_steps.run_in_process(ctx, extract, work / "run")
        failed = [g for g in summary["gates"] if not g["success"]]
        shutil.rmtree(work, ignore_errors=True)
        failures = {
            f"{f['table']}.{f['column'] or '*'}: {f['expectation']}"
            for g in failed
            for f in g["failures"]
        }
        return summary["status"] == "failed", failed[0]["layer"] if failed else None, failures

    refused: dict[str, list[bool]] = {n: [] for n in ["clean", *names]}
    layers: dict[str, Counter[str]] = {n: Counter() for n in refused}
    failures: dict[str, Counter[str]] = {n: Counter() for n in refused}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for draw in range(draws):
            clean = generate_extract(root / f"clean-{draw}", GATE_ENCOUNTERS, seed=1_000 + draw)
            for name in refused:
                extract = (
                    clean
                    if name == "clean"
                    else materialize_scenario(name, "synthetic", spec, clean, root / "f", draw)
                )
                was_refused, layer, why = send(extract, root / "work")
                refused[name].append(was_refused)
                layers[name].update([layer] if layer else [])
                failures[name].update(why)
                if extract != clean:
                    shutil.rmtree(extract)
            shutil.rmtree(clean)
    return {
        name: {
            "draws": draws,
            "refused": sum(refused[name]),
            "refused_per_draw": refused[name],
            "layers": dict(layers[name].most_common()),
            "declared_layer": None if name == "clean" else SCENARIOS[name].caught_at,
            "failures": dict(failures[name].most_common()),
        }
        for name in refused
    }


def _stable(source: str, judged: Sequence[list[DriftAlert]]) -> dict[str, Any]:
    alarms = sum(bool(a) for a in judged)
    return {
        "source": source,
        "windows": len(judged),
        "false_alarms": alarms,
        "act_tier_alarms": sum(any(x.tier == "act" for x in a) for a in judged),
        "by_statistic": dict(Counter(f"{x.tier}: {x.subject}" for a in judged for x in a)),
        "rate_ci": _clopper_pearson(alarms, len(judged)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=0.02, help="declared false-alarm rate")
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    d130 = evaluate_diabetes130(args.window, args.rate)
    synthetic = evaluate_synthetic(args.window, args.rate)
    windows = d130["stable"]["windows"] + synthetic["stable"]["windows"]
    alarms = d130["stable"]["false_alarms"] + synthetic["stable"]["false_alarms"]
    acted = d130["stable"]["act_tier_alarms"] + synthetic["stable"]["act_tier_alarms"]
    train_flags = Counter(
        f["name"] for r in d130["real_windows"] if r["period"] == "train" for f in r["flagged"]
    )
    report = {
        "declared_false_alarm_rate": args.rate,
        "window": args.window,
        "stable": {
            "windows": windows,
            "false_alarms": alarms,
            "rate": round(alarms / windows, 4),
            "rate_ci": _clopper_pearson(alarms, windows),
            "act_tier_alarms": acted,
            "by_source": {"diabetes130": d130["stable"], "synthetic": synthetic["stable"]},
        },
        "scenarios": d130["scenarios"] + synthetic["scenarios"],
        "pipeline_gate_clean": synthetic["pipeline_gate_clean"],
        "real_windows": d130["real_windows"],
        "train_period_flags": dict(train_flags.most_common()),
        "baselines": {"diabetes130": d130["baseline"], "synthetic": synthetic["baseline"]},
        "thresholds": {"diabetes130": d130["thresholds"], "synthetic": synthetic["thresholds"]},
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
    print(json.dumps({k: report[k] for k in ("stable", "train_period_flags")}, indent=2))
    for row in report["scenarios"]:
        print(f"{row['detected_first_window']:>3}/{row['windows']:<3} {row['name']}: "
              f"{row['detected_by']} {row['statistics']}")  # fmt: skip
    clean = report["pipeline_gate_clean"]
    print(f"clean deliveries refused by a gate: {clean['refused']}/{clean['draws']}")
    for row in d130["real_windows"]:
        if row["period"] == "test_later_half":
            print(row["start"], [f["name"] for f in row["flagged"]], row["auroc"], row["ece"],
                  row["observed_to_expected"])  # fmt: skip


if __name__ == "__main__":
    main()
