"""The monitoring story of ``make demo``: a retrained candidate mid-canary, a feed fault half-way
through a replayed stream, and what the system does about it.

Everything runs for real on this laptop: the three KServe servers for the champion, the
candidate's own predictor, the prediction logs, the drift detector, the registry, the rollout
commands and their audit log. What is compressed is time, and it is labelled so:

* the monitoring windows are 30 seconds long, not a week, and the stream is paced into them;
* the rollout's stage minimums are a few hundred predictions and no hours;
* outcomes "arrive" at once: they are the dataset's real 30-day readmissions of the replayed
  encounters.

Locally there is no Knative to split canary traffic: the replay client sends each encounter to
the champion or the candidate as the canary percentage says (by a hash of the encounter, as a
sticky split would), and in shadow it sends each request to both with one request id, as the
inference logger's copy would arrive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import yaml

from hospital_mlops import artifacts
from hospital_mlops.cli.defaults import first_source
from hospital_mlops.data.published_index import read_entries
from hospital_mlops.paths import config_path
from hospital_mlops.use_case import purpose_of
from serving.readiness import NotReady, wait_until_ready

FAULT = "diagnoses_truncated"
SEED = 23
BATCH = 10  # encounters per request


@dataclass(frozen=True)
class Pace:
    """The story's compressed time: the demo's, or a shorter one for the test suite."""

    window_seconds: int = 30
    phase: int = 1500  # encounters per phase (clean, then faulty)
    shadow: int = 600  # encounters answered by both in shadow, then silent (half each)
    # The detector's test size: about three tests per phase of the champion's half of the
    # canary, so its results fall inside the phase they describe (1,000 would straddle them).
    detector_window: int = 250
    stage_min_predictions: int = 200


DEMO_PACE = Pace()
# the same story in about half the time (10-second windows): the test suite's pace
QUICK_PACE = Pace(window_seconds=10, phase=600, shadow=400, detector_window=100)
PACES = {"demo": DEMO_PACE, "quick": QUICK_PACE}


@dataclass(frozen=True)
class StoryOutcome:
    candidate: int
    monitoring: dict[str, Any]  # `hmlops monitor run --json` of the champion
    decision: dict[str, Any]  # the last `hmlops rollout advance --json`
    report: Path
    story_dir: Path


def _demo_policies(directory: Path, pace: Pace = DEMO_PACE) -> tuple[Path, Path]:
    """The shipped policies with the demo's compressed time, written where the commands and
    the report can name them."""
    monitoring = yaml.safe_load(config_path("monitoring.yaml").read_text())
    monitoring["windows"].update(
        length_hours=pace.window_seconds / 3600, min_predictions=100, min_outcomes=100,
        feedback_hours=1, min_judged_alerts=20,
        # the story pauses between its phases (rollout steps, a predictor restarting) for a
        # window or two of compressed time; that is the demo's clock, not a silent feed
        silent_after=6,
    )  # fmt: skip
    rollout = yaml.safe_load(config_path("rollout.yaml").read_text())
    for stage in ("shadow", "silent", "canary"):
        rollout["stages"][stage].update(min_hours=0, min_predictions=pace.stage_min_predictions)
    # the silent stage's outcome-based gates need outcomes the demo only brings later
    for gate in ("ece_max", "alerts_per_100_change_max"):
        rollout["stages"]["silent"]["gates"].pop(gate, None)
    rollout["stages"]["canary"]["steps"] = [50]
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "monitoring.yaml", directory / "rollout.yaml"
    header = (
        "# The demo's compressed time (hospital_mlops/cli/demo_story.py); not for production.\n"
    )
    for path, body in zip(paths, (monitoring, rollout), strict=True):
        path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return paths


DEMO_REVIEWER = "DEMO reviewer (not a real sign-off)"

# ``hmlops`` in this process: (argv) → (exit code, stdout, stderr). The CLI passes its own
# ``run_captured`` in, so the story runs the commands an operator runs without importing them.
CommandRunner = Callable[[Sequence[str]], tuple[int, str, str]]


@dataclass(frozen=True)
class Operator:
    """Runs commands as an operator would, and stops the story on the first that fails."""

    run: CommandRunner

    def __call__(self, *args: str) -> dict[str, Any]:
        code, text, err = self.run(args)
        if code != 0:
            raise RuntimeError(f"hmlops {' '.join(args)} failed ({code}): {err[-1500:]}")
        return json.loads(text) if text.lstrip().startswith(("{", "[")) else {"text": text}


class Predictor:
    """The candidate's own predictor process (on a cluster: its InferenceService revision)."""

    def __init__(self, model: str, port: int, log_url: str, log_file: Path) -> None:
        env = dict(os.environ, HMLOPS_PREDICTION_LOG_URL=log_url, MLFLOW_DISABLE_TELEMETRY="true")
        argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
                "--model", model, "--port", str(port)]  # fmt: skip
        self.url = f"http://127.0.0.1:{port}"
        self.log_file = log_file
        with log_file.open("wb") as sink:
            self.process = subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(f"{self.url}/v2/health/ready", self.process, log_file)
        except NotReady as exc:
            self.stop()
            raise RuntimeError(f"the candidate predictor: {exc}") from None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _logged_rows(url: str) -> int:
    from hospital_mlops.inference.prediction_log import PredictionLog

    log = PredictionLog(url)
    try:
        return log.count()
    finally:
        log.close()


def _await_logged(expected: dict[str, int], timeout: float = 60.0) -> None:
    """Until each prediction log holds its expected rows. The servers write their logs from a
    separate process a moment after they answer, and a rollout step counts what is logged: on
    a busy machine the last batch could still be on its way (the step would then hold)."""
    deadline = time.monotonic() + timeout
    for url, rows in expected.items():
        while (found := _logged_rows(url)) < rows:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}: {found} predictions logged, {rows} expected")
            time.sleep(0.1)


def _post(client: httpx.Client, base: str, batch: list[dict], request_id: str) -> None:
    answer = client.post(
        f"{base}/v1/models/readmission:predict",
        json={"instances": batch},
        headers={"x-request-id": request_id},
    )
    answer.raise_for_status()


def _warm_up(base: str, batch: list[dict[str, Any]], rounds: int = 20) -> None:
    """A new server's first requests pay its start-up (lazy imports, first allocations); as a
    readiness warm-up on a cluster would, send a few marked as probes (never logged as
    predictions) before its latency counts."""
    with httpx.Client(timeout=60) as client:
        for _ in range(rounds):
            answer = client.post(
                f"{base}/v1/models/readmission:predict",
                json={"instances": batch},
                headers={"x-hmlops-explainer": "probe"},
            )
            answer.raise_for_status()


def _wait_for_next_window(seconds: int) -> None:
    now = time.time()
    time.sleep(seconds - now % seconds + 0.5)


def _encounters(
    period: tuple[int, int], scenario: str | None, offset: int, seed: int, n: int, part: int = 0
) -> tuple[list[dict[str, Any]], Any]:
    """``n`` real encounters of ``period``: the ``part``-th of disjoint draws (so the clean and
    the faulty phase never replay the same encounters), the fault injected when named."""
    from hospital_mlops.features.diabetes130_stream import labelled_instances

    instances, labels = labelled_instances(period, n, seed, scenario, part=part)
    for i, instance in enumerate(instances):
        instance["encounter_token"] = f"demo-encounter-{offset + i:08d}"
    return instances, labels


def live_period(model: str, champion: int, test: tuple[int, int], needed: int) -> tuple[int, int]:
    """The validated (test) period's encounters outside the champion's drift reference: what the
    story replays as live traffic. The reference is the period's newest rows, so these are its
    older rest: never calibrated on, never compared with themselves."""
    from hospital_mlops.drift.store import reference_from_registry

    reference, _, _ = reference_from_registry(model, str(champion))
    first = reference.info.get("order_first")
    if not isinstance(first, int):
        raise RuntimeError(
            f"{model} version {champion}'s drift reference does not say where it starts; "
            "retrain it (references now record their span)"
        )
    period = (test[0], min(test[1], first - 1))
    if period[1] - period[0] + 1 < needed:
        raise RuntimeError(
            f"only {max(period[1] - period[0] + 1, 0)} test-period encounters lie outside the "
            f"drift reference; the story needs {needed} (lower serving.yaml drift.reference_rows)"
        )
    return period


def _wait_for_detector(client: httpx.Client, base: str, since: datetime) -> None:
    """Until the detector has tested every full window of what was sent: it tests
    asynchronously, so wait for a result after ``since``, nothing pending, less than a window
    buffered, and no new result for a second."""
    deadline, last = time.monotonic() + 60, None
    while time.monotonic() < deadline:
        view: dict[str, Any] = client.get(f"{base}/drift/latest").json()
        tested = view.get("tested_at")
        settled = (
            tested is not None
            and datetime.fromisoformat(tested.replace("Z", "+00:00")) >= since
            and view["pending_events"] == 0
            and view["buffered_rows"] < view["window"]
        )
        if settled and tested == last:
            return
        last = tested
        time.sleep(1.0)


def _print_windows(windows: list[dict[str, Any]]) -> None:
    """What the detector said per monitoring window, by tier, with the magnitudes."""
    for w in windows:
        if w["data_drift"] is None and not w["data_faults"]:
            inputs = "no detector test"
        else:
            parts = [f"ACT: {fault}" for fault in w["data_faults"]]
            parts += [
                f"investigate: {m['subject']} {m['statistic'].replace('_', ' ')} "
                f"{m['magnitude']:.3g} > {m['threshold']:.3g}"
                for m in w["moved_inputs"][:3]
            ]
            inputs = "; ".join(parts) or "inputs within their calibrated thresholds"
        score = "score moved" if w["score_drift"] else "score within its threshold"
        print(
            f"  {w['start'][11:19]}–{w['end'][11:19]} UTC, {w['n']:>4} predictions: {inputs}; "
            f"{score} (KS p {w['score_drift_p_value']:.2g}, secondary)"
        )


def fault_window_start(run: dict[str, Any]) -> str:
    """The newest window's start: the story's fault phase fills the last window it sends."""
    return max((w["start"] for w in run["windows"]), default="")


def _to_candidate(instance: dict, percent: int) -> bool:
    return zlib.crc32(instance["encounter_token"].encode()) % 100 < percent


def run_story(
    hmlops: CommandRunner,
    model: str,
    champion: int,
    store: Path,
    out: Path,
    port_base: int,
    pace: Pace = DEMO_PACE,
) -> int:
    """The story as ``make demo`` tells it: 0 when the canary was rolled back."""
    try:
        outcome = play_story(Operator(hmlops), model, champion, store, out, port_base, pace)
    except RuntimeError as exc:
        print(f"hmlops demo: the monitoring story stopped: {exc}", file=sys.stderr)
        return 1
    return 0 if outcome.decision["decision"] == "rollback" else 1


def _end_earlier_rollout(hmlops: Operator, model: str, rollout_policy: Path, gitops: Path) -> None:
    """A demo run that was interrupted leaves its candidate mid-rollout; the rollout tool
    rightly refuses a second one, so this run rolls it back first, on the record."""
    status = hmlops("rollout", "status", "--model", model, "--policy", str(rollout_policy),
                     "--json")  # fmt: skip
    state = status.get("state")
    if state and state["stage"] not in ("full", "rolled_back"):
        hmlops("rollout", "rollback", "--model", model, "--version",
                str(state["candidate_version"]), "--policy", str(rollout_policy),
                "--gitops-dir", str(gitops), "--actor", "make demo", "--allow-unpinned-image",
                "--reason", "an earlier demo run was interrupted; a new run starts")  # fmt: skip
        print(f"rolled back version {state['candidate_version']}, left mid-rollout by an "
              "earlier demo run")  # fmt: skip


def play_story(
    hmlops: Operator,
    model: str,
    champion: int,
    store: Path,
    out: Path,
    port_base: int,
    pace: Pace = DEMO_PACE,
) -> StoryOutcome:
    """Tell the story (printing it) and return what it decided; RuntimeError if a step fails."""
    from hospital_mlops.governance import registration, registry
    from hospital_mlops.model.example_requests import test_period
    from hospital_mlops.steps.data import RunContext
    from hospital_mlops.steps.model import run_model_in_process
    from serving.local_stack import LocalStack

    story = out / "story"
    story.mkdir(parents=True, exist_ok=True)
    main_log = f"sqlite:///{(story / 'predictions.sqlite').resolve()}"
    shadow_log = f"sqlite:///{(story / 'shadow-predictions.sqlite').resolve()}"
    os.environ["HMLOPS_PREDICTION_LOG_URL"] = main_log
    os.environ["HMLOPS_SHADOW_PREDICTION_LOG_URL"] = shadow_log
    # the story's drift results stay with its logs, out of the champion's everyday store
    os.environ["HMLOPS_DRIFT_DB_URL"] = f"sqlite:///{(story / 'drift.sqlite').resolve()}"
    monitoring_policy, rollout_policy = _demo_policies(story / "policies", pace)
    gitops = story / "gitops"
    print(
        f"\n=== The monitoring story (compressed time: {pace.window_seconds}-second windows) ===",
        flush=True,
    )
    _end_earlier_rollout(hmlops, model, rollout_policy, gitops)

    # 1. A candidate version. The demo has one extract, so it learns from the same snapshot.
    latest = read_entries(store)
    ctx = RunContext(first_source(None), purpose_of(None, None), store, f"story-{int(time.time())}")
    registered = run_model_in_process(ctx, Path(latest[-1]["path"]), story / "retrain")
    candidate = int(registered["version"])
    from hospital_mlops.governance.config import load_governance

    for role in load_governance().required_signoffs:
        registration.sign_off(model, candidate, role, DEMO_REVIEWER, "recorded by `make demo`")
    print(f"candidate: {model} version {candidate} (retrained; demo sign-offs)")
    test = test_period(
        registry.training_record(registry.resolve(registry.client(), model, str(champion)))
    )
    period = live_period(model, champion, test, pace.shadow + 2 * pace.phase)
    print(
        f"live traffic: test-period encounters {period[0]}–{period[1]}, outside the drift "
        f"reference (its newest rows); the clean and the faulty phase replay different ones"
    )

    rollout = ("rollout", "advance", "--model", model, "--version", str(candidate),
               "--policy", str(rollout_policy), "--monitoring-policy", str(monitoring_policy),
               "--gitops-dir", str(gitops), "--actor", "make demo", "--json",
               # no serving image is built on a laptop: the overlays say they are a dry run
               "--allow-unpinned-image")  # fmt: skip
    stack = LocalStack(
        f"{model}@{champion}", port_base, story / "logs", detector_window=pace.detector_window
    )
    stack.start()
    champion_url = stack.predictor.base_url
    candidate_proc = None
    try:
        # 2. Shadow, then silent: the candidate answers copies of the champion's requests.
        candidate_proc = Predictor(
            f"{model}@{candidate}",
            port_base + 3,
            shadow_log,
            story / "logs" / "candidate-shadow.log",
        )
        metrics = ("--metrics-url", f"{candidate_proc.url}/metrics")
        warmup, _ = _encounters(period, None, 0, SEED, pace.shadow, part=0)
        _warm_up(candidate_proc.url, warmup[:BATCH])
        step = hmlops(*rollout, *metrics)  # its /metrics now, so the stage counts only its own
        print(f"rollout: {step['stage_before']} → {step['stage_after']}")
        logged = {url: _logged_rows(url) for url in (main_log, shadow_log)}
        with httpx.Client(timeout=60) as client:
            for n, start in enumerate(range(0, pace.shadow, BATCH)):
                batch = warmup[start : start + BATCH]
                for base in (champion_url, candidate_proc.url):
                    _post(client, base, batch, f"demo-shadow-{n}")
                logged = {url: rows + len(batch) for url, rows in logged.items()}
                if start == pace.shadow // 2 - BATCH:
                    _await_logged(logged)
                    step = hmlops(*rollout, *metrics)
                    print(f"rollout: {step['stage_before']} → {step['stage_after']}")
        _await_logged(logged)
        step = hmlops(*rollout, *metrics)
        print(f"rollout: {step['stage_before']} → {step['stage_after']} "
              f"(candidate traffic {step['traffic_percent_after']}%)")  # fmt: skip
        percent = int(step["traffic_percent_after"])
        if step["stage_after"] != f"canary {percent}%":
            held = [g for g in step["gates"] if not g["passed"]]
            raise RuntimeError(f"the candidate did not reach canary; gates that held it: {held}")
        candidate_proc.stop()
        # 3. Canary: the candidate's answers now reach clinicians and its main log.
        candidate_proc = Predictor(
            f"{model}@{candidate}", port_base + 3, main_log, story / "logs" / "candidate-canary.log"
        )
        _warm_up(candidate_proc.url, warmup[:BATCH])
        # 4. The stream: one clean window, then the fault.
        phases = [("clean", None, 10_000, 1), (f"fault: {FAULT}", FAULT, 20_000, 2)]
        outcomes = []
        with httpx.Client(timeout=60) as client:
            for label, scenario, offset, part in phases:
                encounters, labels = _encounters(period, scenario, offset, SEED, pace.phase, part)
                _wait_for_next_window(pace.window_seconds)
                fault_started = datetime.now(UTC)
                started = fault_started.strftime("%H:%M:%S")
                for start in range(0, len(encounters), BATCH):
                    batch = encounters[start : start + BATCH]
                    to_candidate = [e for e in batch if _to_candidate(e, percent)]
                    to_champion = [e for e in batch if not _to_candidate(e, percent)]
                    if to_champion:
                        _post(client, champion_url, to_champion, f"demo-{offset + start}-a")
                    if to_candidate:
                        _post(client, candidate_proc.url, to_candidate, f"demo-{offset + start}-b")
                print(f"replayed {len(encounters)} encounters from {started} UTC ({label})")
                outcomes += [
                    {"encounter_token": e["encounter_token"], "readmitted_30d": int(y)}
                    for e, y in zip(encounters, labels, strict=True)
                ]
            _wait_for_detector(client, stack.detector.base_url, fault_started)
    finally:
        if candidate_proc is not None:
            candidate_proc.stop()
        stack.stop()

    # 5. Outcomes arrive (here: the encounters' real 30-day readmissions).
    outcomes_file = story / "outcomes.csv"
    pd.DataFrame(outcomes).to_csv(outcomes_file, index=False)
    hmlops("monitor", "ingest-outcomes", "--input", str(outcomes_file), "--json")
    run = hmlops("monitor", "run", "--model", f"{model}@{champion}", "--policy",
                  str(monitoring_policy), "--json",
                  "--events-file", str(story / "alert-events.jsonl"),
                  "--metrics-file", str(story / "monitoring.prom"))  # fmt: skip
    print(
        f"\nmonitoring the champion: {len(run['windows'])} windows against the validated period "
        f"(the drift detector tests every {pace.detector_window} scored encounters):"
    )
    _print_windows(run["windows"])
    before_fault = [w for w in run["windows"] if w["start"] < fault_window_start(run)]
    real = sorted({m["subject"] for w in before_fault for m in w["moved_inputs"]})
    if real:
        print(
            f"  note: real encounters outside the reference moved beyond a calibrated threshold "
            f"before the fault ({', '.join(real)}): a real difference between periods, not the "
            "injected fault, and worth the look an investigate alert asks for"
        )
    else:
        print("  the clean traffic stayed within the thresholds calibrated on the reference")
    print("alerts to their owners:")
    for alert in run["alerts"]:
        print(f"  [{alert['tier']}] {alert['kind']} → {alert['owner']}: {alert['message']}")
    # 6. The canary's own numbers trip a rollback criterion (its predictor is gone by now: the
    # service numbers are not re-read; the monitoring ones decide).
    step = hmlops(*rollout)
    tripped = [c for c in step["rollback_criteria"] if not c["passed"]]
    print(f"\nrollout: {step['stage_before']} → {step['stage_after']} ({step['decision']})")
    for c in tripped:
        print(f"  criterion {c['name']}: observed {c['observed']}, limit {c['limit']}")
    print(f"  GitOps change to commit: {step['patch_path']}")
    report = story / artifacts.MONITORING_REPORT
    hmlops("monitor", "report", "--model", f"{model}@{champion}", "--policy",
            str(monitoring_policy), "--out", str(report))  # fmt: skip
    print(f"\nmonitoring report (self-contained HTML): {report}")
    print(f"audit log: hmlops rollout audit --model {model}")
    outcome = StoryOutcome(candidate, run, step, report, story)
    (story / "outcome.json").write_text(json.dumps({
        "model": model, "champion": champion, "candidate": candidate, "monitoring": run,
        "decision": step, "report": str(report),
    }, indent=2, default=str))  # fmt: skip
    return outcome


def demo_promote(name: str, version: int) -> None:
    """Sign off with clearly labelled demo reviewers and promote, so later stages have a
    champion to serve. A hospital does this with its real reviewers (see docs/validation.md)."""
    from hospital_mlops.governance import registration
    from hospital_mlops.governance.config import load_governance

    required = list(load_governance().required_signoffs)
    for role in required:
        registration.sign_off(
            name, version, role, DEMO_REVIEWER, "recorded by `make demo` for the bundled dataset"
        )
    registration.promote(name, version, "champion", required)
    print(
        f"\n{name} version {version}: demo sign-offs by '{DEMO_REVIEWER}' for "
        f"{', '.join(required)}; promoted to @champion."
    )
