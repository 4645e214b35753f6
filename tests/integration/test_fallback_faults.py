"""Fault injection for config/fallback.yaml: each mode against real failures. A real predictor
process answers, then is killed (SIGKILL, as an OOM kill would); a server that accepts and never
answers; one that answers 503 (a model that failed verification stays unready), one that
answers 500. The caller's own 400 is never covered up by a fallback."""

from __future__ import annotations

import asyncio
import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hospital_mlops.inference.fallback import load_fallback_policy
from hospital_mlops.inference.prediction_log import PredictionLog
from serving.fallback_scoring import cache_from_log, score_or_fallback
from serving.predictor_client import PredictorClient, PredictorRefused

MODEL = "readmission-30d"
POLICY = load_fallback_policy()
MODES = {
    "no_score": POLICY,
    "static_rule": POLICY.model_copy(update={"mode": "static_rule"}),
    "last_cached_score": POLICY.model_copy(update={"mode": "last_cached_score"}),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _score(port: int, instances: list, mode: str = "no_score", cached=None, timeout=5.0) -> list:
    client = PredictorClient(f"127.0.0.1:{port}", "readmission", timeout)
    kwargs = {"cached": cached} if cached else {}
    return asyncio.run(score_or_fallback(client, instances, MODES[mode], **kwargs))


@pytest.fixture(scope="module")
def instances(d130_champion) -> list[dict]:
    from hospital_mlops.inference.registered_examples import registered_examples

    chosen = registered_examples(MODEL, "champion", n=2, seed=21)
    for i, instance in enumerate(chosen):
        instance["encounter_token"] = f"fallback{i:016d}"
    # the first one meets the rule (3 earlier admissions); the second does not
    chosen[0].update(number_inpatient=3, number_emergency=0, time_in_hospital=2)
    chosen[1].update(number_inpatient=0, number_emergency=0, time_in_hospital=2)
    return chosen


def _start_predictor(port: int, log_url: str, work: Path) -> subprocess.Popen[bytes]:
    """``hmlops serve-one predictor`` for the champion, ready to answer (its output in
    ``work``)."""
    from serving.readiness import NotReady, wait_until_ready

    log_file = work / "predictor.log"
    env = dict(os.environ, HMLOPS_PREDICTION_LOG_URL=log_url, MLFLOW_DISABLE_TELEMETRY="true")
    argv = [sys.executable, "-m", "hospital_mlops.cli", "serve-one", "predictor",
            "--model", f"{MODEL}@champion", "--port", str(port)]  # fmt: skip
    with log_file.open("wb") as sink:
        process = subprocess.Popen(argv, env=env, stdout=sink, stderr=sink)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}/v2/health/ready", process, log_file, 180)
    except NotReady as exc:
        process.kill()
        raise AssertionError(f"{exc}\n{log_file.read_text()[-2000:]}") from None
    return process


@pytest.fixture(scope="module")
def killed_predictor(
    d130_champion, instances, tmp_path_factory, module_new_store_url
) -> Iterator[tuple[int, str, list]]:
    """A real predictor that scored the instances (logging them, on SQLite then PostgreSQL),
    then was SIGKILLed."""
    log_url = module_new_store_url("log")
    port = _free_port()
    process = _start_predictor(port, log_url, tmp_path_factory.mktemp("fallback"))
    try:
        answers = _score(port, instances)
        assert all(not a.get("fallback") and 0 < a["risk"] < 1 for a in answers)
        bad = [dict(instances[0], time_in_hospital=99)]
        with pytest.raises(PredictorRefused) as refused:  # the caller's input: no fallback
            _score(port, bad)
        assert refused.value.status == 400 and "time_in_hospital" in refused.value.body
        # the predictor's log writer flushes before the kill: what it answered was logged
        deadline = time.monotonic() + 10
        log = PredictionLog(log_url)
        while log.count() < len(instances) and time.monotonic() < deadline:
            time.sleep(0.2)
        log.close()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    yield port, log_url, answers


def test_a_killed_predictor_gets_the_default_no_score(killed_predictor, instances) -> None:
    port, _, _ = killed_predictor
    answers = _score(port, instances)
    assert [a["mode"] for a in answers] == ["no_score", "no_score"]
    assert all(a["fallback"] and a["risk"] is None and a["alert"] is None for a in answers)
    assert all(a["cause"] == "unavailable" for a in answers)


def test_the_static_rule_mode_flags_by_its_criteria(killed_predictor, instances) -> None:
    port, _, _ = killed_predictor
    flagged, clear = _score(port, instances, "static_rule")
    assert flagged["mode"] == "static_rule" and flagged["alert"] is True
    assert flagged["criteria_met"] == ["number_inpatient ≥ 2"]
    assert clear["mode"] == "static_rule" and clear["alert"] is False
    assert flagged["risk"] is None and "not the model's risk" in flagged["message"]


def test_the_cached_mode_shows_the_score_given_before_the_kill(killed_predictor, instances):
    port, log_url, before = killed_predictor
    log = PredictionLog(log_url)
    try:
        answers = _score(port, instances, "last_cached_score", cache_from_log(log, MODEL))
    finally:
        log.close()
    for answer, earlier in zip(answers, before, strict=True):
        assert answer["mode"] == "last_cached_score" and answer["fallback"]
        assert answer["risk"] == earlier["risk"] and answer["band"] == earlier["band"]
        assert answer["prediction_id"] == earlier["prediction_id"]
        assert answer["model_version"] == earlier["model_version"]
        assert 0 <= answer["age_hours"] < 0.5
        assert f"{round(100 * earlier['risk'])}%" in answer["message"]
    # an encounter never scored has no cached score: the policy's when_no_cached_score
    unseen = [dict(instances[0], encounter_token="neverscored0000000000")]
    log = PredictionLog(log_url)
    try:
        [answer] = _score(port, unseen, "last_cached_score", cache_from_log(log, MODEL))
    finally:
        log.close()
    assert answer["mode"] == "no_score"


def test_a_predictor_killed_under_load_costs_no_answer_and_serves_no_wrong_score(
    d130_champion, tmp_path, store_url
) -> None:
    """Eight callers keep scoring real encounters, as the CDS service does for each hook call,
    while the predictor is SIGKILLed mid-run (an OOM kill). Every call is answered: the model's
    score before the kill, the cached-score fallback after it, and a cached score is exactly
    the score the model gave that encounter."""
    from hospital_mlops.inference.registered_examples import registered_examples

    examples = registered_examples(MODEL, "champion", n=16, seed=5)
    for i, example in enumerate(examples):
        example["encounter_token"] = f"underload{i:016d}"
    log_url = store_url
    port = _free_port()
    process = _start_predictor(port, log_url, tmp_path)
    log = PredictionLog(log_url)
    cached = cache_from_log(log, MODEL)
    client = PredictorClient(f"127.0.0.1:{port}", "readmission", 2.0)
    results: list[tuple[float, float, str, dict | Exception]] = []
    kill_after, run_for = 2.5, 5.0
    killed: list[float] = []

    async def caller(first: int, end: float) -> None:
        i = first
        while time.monotonic() < end:
            example = examples[i % len(examples)]
            started = time.monotonic()
            try:
                [answer] = await score_or_fallback(
                    client, [example], MODES["last_cached_score"], cached=cached
                )
                results.append((started, time.monotonic(), example["encounter_token"], answer))
            except Exception as exc:  # any exception is a call the EHR saw fail
                results.append((started, time.monotonic(), example["encounter_token"], exc))
            i += 8

    async def drill() -> None:
        end = time.monotonic() + run_for

        async def kill() -> None:
            await asyncio.sleep(kill_after)
            process.send_signal(signal.SIGKILL)
            killed.append(time.monotonic())

        await asyncio.gather(kill(), *(caller(k, end) for k in range(8)))

    try:
        asyncio.run(drill())
    finally:
        process.kill()
        process.wait(timeout=30)
        log.close()
    kill_at = killed[0]
    failed = [r for r in results if isinstance(r[3], Exception)]
    assert not failed, failed[:3]
    model = [(done, t, a) for _, done, t, a in results if not a.get("fallback")]
    model_risk = {t: a["risk"] for _, t, a in model}
    before = [a for _, done, _, a in results if done < kill_at]
    after = [(t, a) for started, _, t, a in results if started > kill_at + 0.5]
    assert len(before) >= 50 and not any(a.get("fallback") for a in before)
    assert len(after) >= 20
    for token, answer in after:
        assert answer["fallback"] and answer["cause"] == "unavailable", answer
        assert answer["mode"] == "last_cached_score", answer  # every encounter was scored before
        assert answer["risk"] == model_risk[token]  # the score the model gave, never another
    # what the model answered well before the kill is in the log, as answered
    log = PredictionLog(log_url)
    try:
        for _, _, answer in [m for m in model if m[0] < kill_at - 0.5]:
            assert log.get(answer["prediction_id"])["risk"] == answer["risk"]
    finally:
        log.close()


class _Answering(http.server.BaseHTTPRequestHandler):
    status = 503

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(self.status)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Model with name readmission is not ready."}')

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(("status", "cause"), [(503, "not_ready"), (500, "failed")])
def test_an_unready_or_failing_service_is_named_as_such(instances, status, cause) -> None:
    handler = type("Handler", (_Answering,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        answers = _score(server.server_address[1], instances, "static_rule")
    finally:
        server.shutdown()
        server.server_close()
    assert [a["cause"] for a in answers] == [cause, cause]
    assert [a["alert"] for a in answers] == [True, False]


def test_a_service_that_never_answers_times_out_into_the_fallback(instances) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections, never reads or answers
        started = time.monotonic()
        answers = _score(silent.getsockname()[1], instances, timeout=1.0)
        waited = time.monotonic() - started
    assert [a["cause"] for a in answers] == ["unavailable", "unavailable"]
    assert waited < 10  # the client's timeout applies: nobody waits on a dead service


def test_a_read_only_log_and_a_dead_detector_cost_no_answer_and_are_counted(
    d130_champion, instances, new_store_url
) -> None:
    """The prediction-log database refuses writes (read-only; full or gone fail the same way)
    and the drift detector is down: every request is still answered, and both losses show on
    /metrics at once, where the alert rules (kustomize/alerts/alerts.yaml) read them."""
    from prometheus_client import REGISTRY, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from serving.predictor import RiskPredictor

    url = new_store_url("log")
    PredictionLog(url).close()
    dead_detector = f"http://127.0.0.1:{_free_port()}/"  # nothing listens there
    predictor = RiskPredictor(
        "readmission", MODEL, "champion", logger_url=dead_detector,
        prediction_log_url=new_store_url.read_only(url),
    )  # fmt: skip
    assert predictor.load(), predictor.not_ready_reason
    try:
        answers = [
            asyncio.run(predictor.predict({"instances": instances}))["predictions"]
            for _ in range(20)
        ]
        assert all(0 < a["risk"] < 1 for batch in answers for a in batch)  # 0 failed
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            predictor.prediction_log.failed_writes < 40 or predictor.emitter.failed < 40
        ):
            time.sleep(0.1)
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(generate_latest(REGISTRY).decode())
            for s in family.samples
        }
        mine = (("model", MODEL), ("version", str(d130_champion)))
        assert samples[("hmlops_prediction_log_rows_lost_total", mine)] == 40
        failed = tuple(sorted((*mine, ("reason", "failed"))))
        # a request and a response event for each of the 20 requests
        assert samples[("hmlops_inference_events_undelivered_total", failed)] == 40
    finally:
        predictor.stop()
    assert PredictionLog(url).count() == 0
