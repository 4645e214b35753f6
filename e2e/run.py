"""``make e2e``: the rendered overlays' workloads, run in podman as declared, end to end against
PostgreSQL and a real ``mlflow server``.

1. A PostgreSQL server and an ``mlflow server`` (PostgreSQL backend, artifacts proxied) on the
   podman bridge's gateway, where the containers reach them as they would the hospital's
   database and registry Services.
2. The pipeline trains and registers through the MLflow server (``hmlops pipeline run``); the
   version is signed off by every required role and promoted to champion. A second run gives the
   candidate the canary overlay serves and the rollout starts.
3. For each overlay (production: the champion; canary: the candidate): ``hmlops deploy render``
   pins it with the serving image's digest, ``kubectl kustomize`` renders it, and its workloads
   run as declared (e2e/workloads.py): the Deployments through ``podman kube play``, each
   InferenceService component as the pod KServe makes of it. Secrets and ConfigMaps hold test
   values. Every readiness probe must go green.
4. Through the containers: predictions from the predictor land in PostgreSQL; the detector
   receives the KServe agent's CloudEvents of those requests and responses (posted here: the
   agent and the Broker are not reproduced) and tests a window into PostgreSQL; the explainer
   explains through the predictor's Service name; a signed CDS Hooks call returns the model's
   card.
5. The second use case (``--overlay post-acute``): its model trained, registered and promoted
   through the same server, its production stage rendered from its own objects
   (``kustomize/use-cases/post-acute/model``) and run the same way (predictions in PostgreSQL,
   the explainer, its own detector's window); the namespace's CDS service, from the readmission
   render that binds it, answers ``encounter-start`` with its card from its container.
6. On the host, as the operator's tools: ``hmlops monitor run`` reads PostgreSQL (each model under
   its own use case's policy), and ``hmlops rollout advance`` starts the candidate's rollout,
   writing its GitOps change.

Exits 0 only when all of it succeeded; the last line is a JSON summary. A failure is one line
``e2e: FAILED: …`` after the details (a container's log tail). Everything it started is removed.
Nothing here is part of the product.

Usage: python -m e2e.run [--overlay production] [--overlay canary] [--overlay post-acute]
       [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from e2e.local_mlflow import LocalMlflow
from e2e.local_postgres import LocalPostgres
from e2e.podman import GATEWAY, SUBNET, bring_up_bridge, built_images, podman
from e2e.workloads import StandIns, Workload, plan, played, serving

ROOT = Path(__file__).resolve().parents[1]
HMLOPS = [sys.executable, "-m", "hospital_mlops.cli"]
NAMESPACE = "hospital-mlops"
DISCHARGE = "/cds-services/readmission-risk-discharge"
ADMISSION = "/cds-services/post-acute-need-admission"
WINDOW_ROWS = 1100  # the detector tests a window of 1,000 in-use encounters
# production and canary: the readmission model's stages; post-acute: the second use case's model
# at its own production stage (its own objects only), its admission card through the namespace's
# CDS service (the production render's, which binds it)
OVERLAYS = ("production", "canary", "post-acute")


@dataclass(frozen=True)
class Served:
    """A registered model and the name it is served under (its InferenceService's)."""

    model: str
    service: str
    use_case: str | None = None  # None: the first


READMISSION = Served("readmission-30d", "readmission")
POST_ACUTE = Served("post-acute-at-admission", "post-acute", "post_acute_at_admission")
MODEL, SERVICE = READMISSION.model, READMISSION.service
READY_TIMEOUT = 360.0  # seconds; a detector loads its reference window on a small machine


class E2EError(RuntimeError):
    """A step of the end-to-end run failed; the message says which and what was seen."""


@dataclass
class Stores:
    postgres: LocalPostgres
    mlflow: LocalMlflow
    predictions_url: str
    drift_url: str


def _url_on_gateway(url: str) -> str:
    return url.replace("@127.0.0.1:", f"@{GATEWAY}:")


def _cli(env: Mapping[str, str], *args: str, timeout: float = 900) -> str:
    proc = subprocess.run(
        [*HMLOPS, *args],
        capture_output=True,
        text=True,
        env=dict(env),
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise E2EError(
            f"hmlops {' '.join(args[:2])} exited {proc.returncode}: "
            f"{(proc.stderr or proc.stdout).strip()[-1500:]}"
        )
    return proc.stdout


def _step(name: str) -> None:
    print(f"e2e: {name}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ the registry


def _train_and_register(
    env: Mapping[str, str], work: Path, seed: int, served: Served = READMISSION
) -> int:
    use_case = ["--use-case", served.use_case] if served.use_case else []
    out = _cli(env, "pipeline", "run", "--out", str(work / f"pipeline-{served.service}-{seed}"),
               "--seed", str(seed), *use_case, "--json")  # fmt: skip
    summary = json.loads(out)
    model = summary.get("model") or {}
    if not model.get("version"):
        raise E2EError(f"the pipeline registered no version: {json.dumps(summary)[:1500]}")
    return int(model["version"])


def _sign_off(env: Mapping[str, str], version: int, model: str = MODEL) -> None:
    from hospital_mlops.governance.config import load_governance

    for role in load_governance().required_signoffs:
        _cli(env, "registry", "sign-off", "--model", model, "--version", str(version), "--role",
             role, "--by", f"e2e {role} reviewer")  # fmt: skip


# ------------------------------------------------------------------------------ the overlays


def _render(
    env: Mapping[str, str],
    stage: str,
    version: int,
    image: str,
    work: Path,
    served: Served = READMISSION,
) -> list[Any]:
    out = work / f"deploy-{served.service}-{stage}"
    _cli(env, "deploy", "render", "--model", served.model, "--version", str(version), "--stage",
         stage, "--image", image, "--out", str(out))  # fmt: skip
    built = subprocess.run(
        ["kubectl", "kustomize", str(out)], capture_output=True, text=True, check=False
    )
    if built.returncode != 0:
        raise E2EError(f"kubectl kustomize {out}: {built.stderr.strip()[-1000:]}")
    return list(yaml.safe_load_all(built.stdout))


def stand_ins(stores: Stores, mlflow_url: str, hmac_key: str, trusted: str) -> StandIns:
    return StandIns(
        secrets={
            "hmlops-registry": {"MLFLOW_TRACKING_URI": mlflow_url},
            "hmlops-hmac-key": {"HMLOPS_HMAC_KEY": hmac_key},
            "hmlops-prediction-log": {"HMLOPS_PREDICTION_LOG_URL": stores.predictions_url},
            "hmlops-drift-db": {"HMLOPS_DRIFT_DB_URL": stores.drift_url},
        },
        config_maps={"hmlops-cds-trusted-clients": {"trusted-clients.json": trusted}},
    )


def _post(url: str, body: Any, timeout: float = 120, **kwargs: Any) -> Any:
    answer = httpx.post(url, json=body, timeout=timeout, **kwargs)
    if answer.status_code != 200:
        raise E2EError(f"POST {url}: {answer.status_code} {answer.text[:800]}")
    return answer.json()


def _count(url: str, sql: str, **params: Any) -> int:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace(f"@{GATEWAY}:", "@127.0.0.1:"))
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(sql), params).scalar_one())
    finally:
        engine.dispose()


def _predictions_land_in_postgres(
    stack: Mapping[str, Workload], stores: Stores, version: int, served: Served
) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any], bytes]]]:
    """Encounters from the version's test period, scored by the predictor container; every
    answer's row found in PostgreSQL. Returns the answers and (request, response body) pairs."""
    from hospital_mlops.inference.registered_examples import registered_examples

    encounters = registered_examples(served.model, str(version), n=WINDOW_ROWS, seed=3)
    url = f"{stack['predictor'].base}/v1/models/{served.service}:predict"
    answers: list[dict[str, Any]] = []
    exchanges: list[tuple[dict[str, Any], bytes]] = []
    for start in range(0, len(encounters), 100):
        body = {"instances": encounters[start : start + 100]}
        reply = httpx.post(url, json=body, timeout=120)
        if reply.status_code != 200:
            raise E2EError(f"POST {url}: {reply.status_code} {reply.text[:800]}")
        answers += reply.json()["predictions"]
        exchanges.append((body, reply.content))
    wrong = {a["model_version"] for a in answers} - {f"{served.model}/{version}"}
    if wrong:
        raise E2EError(f"the predictor served {sorted(wrong)}, not {served.model}/{version}")
    ids = [a["prediction_id"] for a in answers]
    deadline = time.monotonic() + 60
    found = 0
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the table appears with the first batch
            found = _count(
                stores.predictions_url,
                "SELECT count(*) FROM predictions WHERE prediction_id = ANY(:ids)",
                ids=ids,
            )
        if found == len(ids):
            break
        time.sleep(1)
    if found != len(ids):
        raise E2EError(f"{found} of {len(ids)} predictions reached PostgreSQL within 60 s")
    return answers, exchanges


def _detector_tests_a_window(
    stack: Mapping[str, Workload],
    stores: Stores,
    exchanges: Sequence[tuple[dict[str, Any], bytes]],
    served: Served,
) -> dict[str, Any]:
    """The KServe agent's CloudEvents (binary mode) of every request and response, posted to the
    detector as the Broker's Triggers deliver them; its window's result is read back and found
    in PostgreSQL."""
    from hospital_mlops.drift.inference_events import binary_headers

    detector = stack["detector"].base
    before = _drift_rows(stores)
    for i, (body, response) in enumerate(exchanges):
        ident = f"e2e-{served.service}-{i}"
        request = binary_headers(ident, "request", served.service, namespace=NAMESPACE)
        answered = binary_headers(ident, "response", served.service, namespace=NAMESPACE)
        for kind, payload, headers in (
            ("request", json.dumps(body).encode(), request),
            ("response", response, answered),
        ):
            posted = httpx.post(f"{detector}/", content=payload, headers=headers, timeout=60)
            if posted.status_code != 202:
                raise E2EError(f"detector: {kind} event {i}: {posted.status_code} {posted.text}")
    deadline = time.monotonic() + 180
    latest: dict[str, Any] = {}
    while time.monotonic() < deadline:
        latest = httpx.get(f"{detector}/drift/latest", timeout=10).json()
        if latest.get("status") == "tested":
            break
        time.sleep(1)
    if latest.get("status") != "tested":
        raise E2EError(f"the detector tested no window: {latest}")
    rows = _drift_rows(stores)
    if rows <= before:
        raise E2EError("the detector's window result is not in PostgreSQL")
    return {
        "events": len(exchanges) * 2,
        "window_size": latest["window_size"],
        "is_drift": latest["is_drift"],
        "drift_results_in_postgres": rows,
    }


def _drift_rows(stores: Stores) -> int:
    try:
        return _count(stores.drift_url, "SELECT count(*) FROM drift_results")
    except Exception:  # no table until the first result
        return 0


def _explainer_explains(
    stack: Mapping[str, Workload], answer: Mapping[str, Any], body: Any, served: Served
) -> None:
    url = f"{stack['explainer'].base}/v1/models/{served.service}:explain"
    explained = _post(url, body, timeout=180)
    (explanation,) = explained["explanations"]
    if explanation["model_version"] != answer["model_version"] or not explanation["reasons"]:
        raise E2EError(f"the explainer's answer is not the predictor's: {explanation}")


def _admission_card(cds: Workload, ehr: Any, version: int) -> str:
    """The namespace's CDS service (the readmission render's, which binds every further use
    case) answers encounter-start with the post-acute model's card, from its own predictor."""
    from hospital_mlops.cli.cds import example_request

    url = f"{cds.base}{ADMISSION}"
    body = example_request(hook="encounter-start")
    answered = _post(url, body, headers=ehr.authorization(url))
    cards = answered.get("cards") or []
    if len(cards) != 1 or not cards[0]["summary"].startswith("Post-acute care need"):
        raise E2EError(
            f"the admission service answered no model card: {json.dumps(answered)[:800]}"
        )
    if f"_Model {POST_ACUTE.model}/{version};" not in cards[0]["detail"]:
        raise E2EError(f"the admission card is not from {POST_ACUTE.model}/{version}")
    return str(cards[0]["summary"])


def _cds_card(stack: Mapping[str, Workload], ehr: Any, version: int) -> str:
    from hospital_mlops.cli.cds import example_request

    url = f"{stack['cds'].base}{DISCHARGE}"
    unsigned = httpx.post(url, json=example_request("complete"), timeout=60)
    if unsigned.status_code != 401:
        raise E2EError(f"an unsigned CDS call answered {unsigned.status_code}, not 401")
    answered = _post(url, example_request("complete"), headers=ehr.authorization(url))
    cards = answered.get("cards") or []
    if len(cards) != 1 or not cards[0]["summary"].startswith("30-day readmission risk"):
        raise E2EError(f"the CDS service answered no model card: {json.dumps(answered)[:800]}")
    if f"_Model {MODEL}/{version};" not in cards[0]["detail"]:
        raise E2EError(f"the card is not from {MODEL}/{version}: {cards[0]['detail'][-300:]}")
    return str(cards[0]["summary"])


def _exercise(
    stage: str,
    docs: Sequence[Any],
    values: StandIns,
    image: str,
    work: Path,
    stores: Stores,
    ehr: Any,
    version: int,
    served: Served = READMISSION,
    namespace_cds: Workload | None = None,
) -> tuple[dict[str, Any], dict[str, float]]:
    """The overlay's workloads, each ready, each exercised; everything removed afterwards. A
    further use case's render holds no CDS service: ``namespace_cds`` (the readmission render's)
    answers its hook."""
    # the predictor is published at the gateway, where its Service name resolves
    aliases = {f"{served.service}-predictor.{NAMESPACE}": GATEWAY}
    with serving(docs, values, image, work, prefix=f"hmlops-e2e-{stage}", aliases=aliases) as (
        stack,
        ready,
    ):
        _step(f"{stage}: predictor and explainer ready in {ready}")
        answers, exchanges = _predictions_land_in_postgres(stack, stores, version, served)
        first = {"instances": exchanges[0][0]["instances"][:1]}
        _explainer_explains(stack, answers[0], first, served)
        with played(stack["detector"], values, image, work, aliases, READY_TIMEOUT) as seconds:
            ready["detector"] = seconds
            detector = _detector_tests_a_window(stack, stores, exchanges, served)
        cds = stack.get("cds") or namespace_cds
        if cds is None:
            raise E2EError(f"{stage}: no CDS service to answer its hook")
        with played(cds, values, image, work, aliases, READY_TIMEOUT) as seconds:
            ready["cds"] = seconds
            card = (
                _cds_card(stack, ehr, version)
                if served == READMISSION
                else _admission_card(cds, ehr, version)
            )
    result = {"stage": stage, "model": served.model, "version": version,
              "predictions": len(answers), "detector": detector, "cds_card": card}  # fmt: skip
    return result, ready


# ---------------------------------------------------------------------------- operator tools


def _monitor(env: Mapping[str, str], work: Path, served: Served = READMISSION) -> dict[str, Any]:
    """``hmlops monitor run`` over the PostgreSQL prediction log (the champion's predictions),
    under the model's own use case's policy."""
    out = work / f"monitoring-{served.service}.json"
    _cli(env, "monitor", "run", "--model", f"{served.model}@champion", "--out", str(out),
         "--json")  # fmt: skip
    run = json.loads(out.read_text())
    return {"predictions_read": _predictions_read(run), "alerts": len(run.get("alerts", []))}


def _predictions_read(run: Mapping[str, Any]) -> int:
    windows = run.get("windows") or []
    return int(sum(int(w.get("predictions", w.get("n", 0)) or 0) for w in windows))


def _rollout(env: Mapping[str, str], version: int, image: str, work: Path) -> dict[str, Any]:
    gitops = work / "gitops"
    out = _cli(env, "rollout", "advance", "--model", MODEL, "--version", str(version),
               "--gitops-dir", str(gitops), "--image", image, "--actor", "e2e",
               "--json")  # fmt: skip
    decision = json.loads(out)
    patch = Path(str(decision.get("patch_path") or ""))
    if not patch.is_file() or gitops not in patch.parents:
        raise E2EError(f"rollout advance wrote no GitOps change: {json.dumps(decision)[:800]}")
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(patch.parent)], capture_output=True, text=True, check=False
    )
    if rendered.returncode != 0 or f"{MODEL}@{version}" not in rendered.stdout:
        raise E2EError(f"the GitOps change does not render {MODEL}@{version}: {rendered.stderr}")
    return {
        "decision": decision.get("decision"),
        "stage_after": decision.get("stage_after"),
        "written": str(patch.parent.relative_to(gitops)),
    }


# ------------------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _stores(work: Path) -> Iterator[Stores]:
    postgres = LocalPostgres(work / "postgres", listen=("127.0.0.1", GATEWAY), clients=(SUBNET,))
    postgres.start()
    mlflow: LocalMlflow | None = None
    try:
        mlflow = LocalMlflow(postgres.create_database("mlflow"), work / "mlflow", host=GATEWAY)
        mlflow.start()
        yield Stores(
            postgres,
            mlflow,
            _url_on_gateway(postgres.create_database("predictions")),
            _url_on_gateway(postgres.create_database("drift")),
        )
    finally:
        if mlflow is not None:
            mlflow.stop()
        postgres.stop()


def run(overlays: Sequence[str], work: Path, images_json: Path) -> dict[str, Any]:
    from hospital_mlops.ehr.cds_auth import DemoClient

    started = time.monotonic()
    images, _ = built_images(images_json)
    bridge = f"hmlops-e2e-bridge-{os.getpid()}"
    bring_up_bridge(images["serving"], bridge)
    try:
        with _stores(work) as stores:
            hmac_key = secrets.token_hex(32)
            env = {
                **os.environ,
                "MLFLOW_TRACKING_URI": stores.mlflow.url,
                "HMLOPS_STATE_DIR": str(work / "state"),
                "HMLOPS_HMAC_KEY": hmac_key,
                "HMLOPS_PREDICTION_LOG_URL": stores.predictions_url,
                "HMLOPS_DRIFT_DB_URL": stores.drift_url,
            }
            os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "HMLOPS_STATE_DIR")})
            _step("training and registering through the MLflow server")
            champion = _train_and_register(env, work, seed=1)
            _sign_off(env, champion)
            _cli(env, "registry", "promote", "--model", MODEL, "--version", str(champion))
            candidate = _train_and_register(env, work, seed=2) if "canary" in overlays else None
            if candidate is not None:
                _sign_off(env, candidate)
            admission = None
            if "post-acute" in overlays:
                _step("training and registering the post-acute model through the MLflow server")
                admission = _train_and_register(env, work, seed=1, served=POST_ACUTE)
                _sign_off(env, admission, POST_ACUTE.model)
                _cli(env, "registry", "promote", "--model", POST_ACUTE.model, "--version",
                     str(admission))  # fmt: skip
            ehr = DemoClient.create(work / "ehr")
            values = stand_ins(
                stores, stores.mlflow.url, hmac_key, ehr.trusted_clients_file.read_text()
            )
            results: dict[str, Any] = {}
            ready: dict[str, Any] = {}
            for stage in overlays:
                (work / stage).mkdir(exist_ok=True)
                if stage == "post-acute":
                    assert admission is not None
                    _step(f"post-acute: rendering {POST_ACUTE.model}@{admission} (its own objects)")
                    docs = _render(env, "production", admission, images["serving"], work,
                                   POST_ACUTE)  # fmt: skip
                    # the namespace's CDS service: the readmission render's, binding post-acute
                    namespace = _render(env, "production", champion, images["serving"], work)
                    (cds,) = [w for w in plan(namespace, values, work / stage, "hmlops-e2e-ns")
                              if w.component == "cds"]  # fmt: skip
                    results[stage], ready[stage] = _exercise(
                        stage, docs, values, images["serving"], work / stage, stores, ehr,
                        admission, POST_ACUTE, cds,
                    )  # fmt: skip
                    continue
                version = champion if stage == "production" else candidate
                assert version is not None
                _step(f"{stage}: rendering {MODEL}@{version} and starting its workloads")
                docs = _render(env, stage, version, images["serving"], work)
                results[stage], ready[stage] = _exercise(
                    stage, docs, values, images["serving"], work / stage, stores, ehr, version
                )
            _step("hmlops monitor run on PostgreSQL; hmlops rollout advance")
            monitored = _monitor(env, work)
            if admission is not None:
                monitored = {
                    "readmission": monitored,
                    "post-acute": _monitor(env, work, POST_ACUTE),
                }
            rollout = (
                _rollout(env, candidate, images["serving"], work) if candidate is not None else None
            )
            in_postgres = _count(stores.predictions_url, "SELECT count(*) FROM predictions")
    finally:
        podman("rm", "--force", "--ignore", "--time", "1", bridge, check=False)
    return {
        "overlay": list(overlays),
        "workloads_ready": ready,
        "predictions_in_postgres": in_postgres,
        "cds_card": all(bool(r["cds_card"]) for r in results.values()),
        "detector": {k: r["detector"] for k, r in results.items()},
        "monitor_run": monitored,
        "rollout": rollout,
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--overlay", action="append", choices=OVERLAYS)
    parser.add_argument("--work", type=Path, help="keep everything here (default: a temporary dir)")
    parser.add_argument("--images", type=Path, default=ROOT / "out" / "images.json")
    args = parser.parse_args(argv)
    overlays = tuple(dict.fromkeys(args.overlay or OVERLAYS))
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="e2e-")))
        work.mkdir(parents=True, exist_ok=True)
        try:
            summary = run(overlays, work, args.images)
        # every failure of a step it drives (the E2E, workload, podman, image and PostgreSQL
        # errors are RuntimeErrors); a bug in the harness itself still shows its traceback
        except (RuntimeError, OSError, subprocess.SubprocessError, httpx.HTTPError) as exc:
            detail, _, _ = str(exc).partition("\n")
            print(str(exc), file=sys.stderr)
            print(f"e2e: FAILED: {detail}", file=sys.stderr)
            return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
