"""The serving commands of ``hmlops``: serve (the local stack), serve-one (one component, as a
container runs it) and deploy render (a kustomize overlay for a registry version)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hospital_mlops import artifacts
from hospital_mlops.cli.defaults import MODEL_HELP
from hospital_mlops.cli.ports import check_port

if TYPE_CHECKING:
    from serving.local_stack import LocalStack

EXIT_NOT_READY = 1


class ServeUsageError(ValueError):
    """A bad serving argument; printed as one line, exit 2."""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser(
        "serve", help="serve a registered model on 127.0.0.1: predictor, explainer, drift detector"
    )
    srv.add_argument("--model", help=MODEL_HELP)
    srv.set_defaults(model_default="ref")
    srv.add_argument(
        "--port-base", type=int, default=8080, help="predictor on P, explainer P+1, detector P+2"
    )
    srv.add_argument(
        "--print-example-request",
        action="store_true",
        help="print a valid v1 request body (a real test-period encounter) and exit",
    )

    one = sub.add_parser("serve-one", help="run one serving component (a container's command)")
    one.add_argument("component", choices=["predictor", "explainer", "detector"])
    one.add_argument("--model", help=MODEL_HELP)
    one.set_defaults(model_default="ref")
    # KServe appends --http_port, --model_name and --predictor_host to a custom explainer's
    # arguments (and --workers in some modes): accept its spellings as aliases.
    one.add_argument("--port", "--http_port", dest="port", type=int, default=8080)
    one.add_argument("--bind", default="127.0.0.1", help="0.0.0.0 inside a pod")
    one.add_argument("--logger-url", help="predictor: post inference-logger CloudEvents here")
    one.add_argument(
        "--predictor-host",
        "--predictor_host",
        dest="predictor_host",
        help="explainer: HOST[:PORT] of the predictor",
    )
    one.add_argument(
        "--model_name", help="explainer: the served model's name (default: its use case's)"
    )
    one.add_argument("--workers", type=int, default=1, help="accepted for KServe; one worker")
    one.add_argument("--sink", help="detector: post drift-result CloudEvents here")
    one.add_argument(
        "--window",
        type=int,
        help="detector: scored encounters per test (default: drift.window in config/serving.yaml)",
    )
    one.add_argument("--model-sha256", help="predictor: refuse any other artifact (pinned)")

    dep = sub.add_parser("deploy", help="render the kustomize overlay for a registry version")
    dsub = dep.add_subparsers(dest="action", required=True)
    render = dsub.add_parser("render", help="write the overlay for NAME version N at STAGE")
    render.add_argument("--model", required=True)
    render.add_argument("--version", type=int, required=True)
    render.add_argument("--stage", required=True, choices=["shadow", "canary", "production"])
    render.add_argument("--out", type=Path, help="default out/deploy/<model>-v<N>-<stage>")
    render.add_argument(
        "--image",
        help="the serving image; by digest (…@sha256:<64 hex>) for canary and production",
    )
    render.add_argument(
        "--allow-unpinned-image",
        action="store_true",
        help="accept a tag-only image for canary or production in a dry run (the overlay says so)",
    )
    render.add_argument("--namespace", help="the target namespace")


def parse_model(model: str) -> tuple[str, str]:
    """``NAME@REF`` → (name, ref); a bundle directory → (path, "path")."""
    from hospital_mlops.inference.bundle import is_bundle

    if is_bundle(model):
        return model, "path"
    name, _, ref = model.partition("@")
    if not name or not ref:
        raise ServeUsageError(
            f"--model must be NAME@ALIAS, NAME@VERSION or a bundle directory, not {model!r}"
        )
    return name, ref


def _start_stack(model: str, port_base: int) -> LocalStack | None:
    """Start the three servers and print their URLs; None (reason on stderr) if one fails."""
    from serving.local_stack import PREDICTOR_MODEL, LocalStack, StackFailed

    name, ref = parse_model(model)
    if ref == "path":
        served = PREDICTOR_MODEL
    else:
        from hospital_mlops.inference.served_model import served_name_of

        served = served_name_of(name, ref)
    stack = LocalStack(model, port_base, served_name=served)
    print(f"starting predictor, explainer and drift detector for {model} …", flush=True)
    try:
        stack.start()
    except StackFailed as exc:
        print(f"hmlops: refused: {exc}", file=sys.stderr)
        return None
    except KeyboardInterrupt:
        stack.stop()  # stopped while starting: leave no server behind
        raise
    for label, url in stack.urls().items():
        print(f"  {label:16} {url}")
    return stack


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (kill, systemd, a container runtime) both stop the three servers
    cleanly. Set explicitly: a shell that starts this in the background leaves SIGINT ignored,
    and Python would then never raise KeyboardInterrupt."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def serve(args: argparse.Namespace) -> int:
    name, ref = parse_model(args.model)
    if args.print_example_request:
        from hospital_mlops.inference.registered_examples import registered_examples

        print(json.dumps({"instances": registered_examples(name, ref, n=1)}, indent=2))
        return 0
    check_port(args.port_base, 3)
    from hospital_mlops.security.api_access import client_headers, tokens_from_env

    tokens = tokens_from_env()
    if tokens is not None and tokens.client(client_headers().get("authorization")) is None:
        raise ServeUsageError(
            "the endpoints require bearer tokens (HMLOPS_API_TOKENS_FILE), so the explainer and "
            "the inference logger need one too: set HMLOPS_API_TOKEN to a client token from "
            "that file (`hmlops access add-client --name local-stack`)"
        )
    _stop_on_signals()
    stack = _start_stack(args.model, args.port_base)
    if stack is None:
        return EXIT_NOT_READY
    print(f"  logs             {stack.log_dir}")
    if tokens is not None:
        print(f"  access           bearer token required ({len(tokens.by_hash)} clients)")
    print("Ctrl-C stops all three.", flush=True)
    try:
        return stack.wait()
    except KeyboardInterrupt:
        print("\nstopping …", flush=True)
        return 0
    finally:
        stack.stop()


def serve_one(args: argparse.Namespace) -> int:
    check_port(args.port)
    from hospital_mlops.security.api_access import tokens_from_env

    tokens_from_env()  # a broken tokens file is a clear error before any server starts
    if args.component == "predictor":
        from serving.server import ModelNotReady, serve_predictor

        name, ref = parse_model(args.model)
        try:
            serve_predictor(
                name,
                ref,
                args.port,
                bind=args.bind,
                logger_url=args.logger_url,
                expected_sha256=args.model_sha256,
            )
        except ModelNotReady as exc:
            print(f"hmlops: refused: the model is not ready: {exc}", file=sys.stderr)
            return EXIT_NOT_READY
        return 0
    loopback = args.bind == "127.0.0.1"
    if args.component == "explainer":
        if not args.predictor_host:
            raise ServeUsageError("the explainer needs --predictor-host HOST[:PORT]")
        from hospital_mlops.inference.served_model import served_name_of
        from serving.explainer import ExplainerNotReady, serve_explainer

        # KServe appends --model_name (the InferenceService's name); run by hand, the served
        # name of --model's use case
        model_name = args.model_name or served_name_of(*parse_model(args.model))
        try:
            serve_explainer(
                args.predictor_host, args.port, bind_loopback=loopback, model_name=model_name
            )
        except ExplainerNotReady as exc:
            print(f"hmlops: refused: {exc}", file=sys.stderr)
            return EXIT_NOT_READY
        return 0
    from hospital_mlops.drift.monitor import MIN_WINDOW
    from serving.detector import DetectorNotReady, serve_detector

    if args.window is not None and args.window < MIN_WINDOW:
        raise ServeUsageError(f"--window must be at least {MIN_WINDOW}, not {args.window}")
    name, ref = parse_model(args.model)
    reference = Path(name) / artifacts.DRIFT_REFERENCE if ref == "path" else None
    try:
        serve_detector(
            name,
            ref,
            args.port,
            bind_loopback=loopback,
            sink=args.sink,
            reference_path=reference,
            window=args.window,
        )
    except DetectorNotReady as exc:
        print(f"hmlops: refused: the drift detector is not ready: {exc}", file=sys.stderr)
        return EXIT_NOT_READY
    return 0


def deploy(args: argparse.Namespace) -> int:
    from hospital_mlops.deploy import overlay as rendering

    out = args.out or Path("out/deploy") / f"{args.model}-v{args.version}-{args.stage}"
    try:
        path = rendering.render_overlay(
            args.model,
            args.version,
            args.stage,
            out,
            image=args.image or rendering.DEFAULT_IMAGE,
            namespace=args.namespace or rendering.DEFAULT_NAMESPACE,
            allow_unpinned_image=args.allow_unpinned_image,
        )
    except rendering.DeployRenderError as exc:
        raise ServeUsageError(str(exc)) from None
    print(f"wrote the {args.stage} overlay for {args.model} version {args.version} to {path}")
    print(f"  build:  kubectl kustomize {path}")
    print(f"  apply:  kubectl apply -k {path}")
    return 0


def print_prediction_lineage(prediction_id: str, store: Path, as_json: bool) -> int:
    """A prediction → its model version and artifact → the model's lineage to the extract."""
    from hospital_mlops.data.lineage import LineageNotFound, LineageStore, format_chain
    from hospital_mlops.inference.prediction_log import PredictionLog

    record = PredictionLog().get(prediction_id)
    try:
        chain = LineageStore(store).chain(record["model_sha256"])
    except LineageNotFound:
        chain = []
    if as_json:
        nodes = [{"depth": d + 1, **n} for d, n in chain]
        print(json.dumps([{"depth": 0, "kind": "prediction", **record}, *nodes], default=str))
        return 0
    answer = record["answer"]
    print(
        f"prediction {record['prediction_id']} at {record['scored_at']} "
        f"(request {record['request_id']}, {record['protocol']})\n"
        f"  risk {answer['risk']} band {answer['band']} alert {answer['alert']}\n"
        f"  model {record['model_name']} version {record['model_version']} "
        f"sha256 {record['model_sha256'][:16]}… feature set {record['feature_set_version']}\n"
        f"  trained on features {record['features_sha256'][:16]}… ({record['source']})"
    )
    if chain:
        print(format_chain(chain))
    else:
        print(
            f"  the model's lineage is not in {store}; pass the store it was trained in (--out)",
        )
    return 0


def demo_round_trip(model: str, store: Path, port_base: int = 8080, n: int = 5) -> int:
    """Start the three servers, score a few real test-period encounters, print one full answer
    and one explanation and the detector's state, then stop them."""
    import httpx

    from hospital_mlops.inference.registered_examples import registered_examples

    name, ref = parse_model(model)
    instances = registered_examples(name, ref, n=n)
    print()
    stack = _start_stack(model, port_base)
    if stack is None:
        return EXIT_NOT_READY
    try:
        with httpx.Client(timeout=120) as client:
            answer = client.post(
                f"{stack.predictor.base_url}/v1/models/{stack.served_name}:predict",
                json={"instances": instances},
            )
            answer.raise_for_status()
            predictions = answer.json()["predictions"]
            print(f"\n{len(predictions)} real test-period encounters scored; risks:")
            for p in predictions:
                print(
                    f"  {p['prediction_id']}  risk {p['risk']:.3f}  {p['band']:8} "
                    f"alert {p['alert']}"
                )
            print("\nOne full answer (v1):")
            print(json.dumps(predictions[0], indent=2))
            explained = client.post(
                f"{stack.explainer.base_url}/v1/models/{stack.served_name}:explain",
                json={"instances": instances[:1]},
            )
            print(f"\nIts explanation (clinician view, HTTP {explained.status_code}):")
            print(json.dumps(explained.json(), indent=2))
            drift = client.get(f"{stack.detector.base_url}/drift/latest")
            print(f"\nDrift detector (HTTP {drift.status_code}): {json.dumps(drift.json())}")
            demo_cds_card(stack.predictor.base_url, port_base + 3, stack.log_dir)
        print(
            f"\n  lineage of that prediction:  hmlops lineage {predictions[0]['prediction_id']} "
            f"--out {store}"
        )
    finally:
        stack.stop()
        print("servers stopped.")
    return 0


def demo_cds_card(
    predictor_url: str,
    port: int,
    log_dir: Path,
    *,
    hook: str = "encounter-discharge",
    use_case_predictors: dict[str, str] | None = None,
) -> None:
    """Start the CDS Hooks service against the predictor(s), post one call on ``hook`` built
    from example FHIR data (a real test-period encounter), print the card, stop it."""
    import os
    import subprocess

    import httpx

    from hospital_mlops.cli.cds import example_request
    from hospital_mlops.ehr.cds_auth import TRUSTED_CLIENTS_ENV, DemoClient
    from serving.readiness import wait_until_ready

    log_file = log_dir / "cds.log"
    ehr = DemoClient.create(log_dir)  # the demo EHR signs its calls, as a real one must
    env = {**os.environ, TRUSTED_CLIENTS_ENV: str(ehr.trusted_clients_file)}
    argv = [sys.executable, "-m", "hospital_mlops.cli", "cds", "serve", "--port", str(port),
            "--predictor-url", predictor_url]  # fmt: skip
    for use_case, url in (use_case_predictors or {}).items():
        argv += ["--use-case-predictor", f"{use_case}={url}"]
    with log_file.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(f"{base}/cds-services", process, log_file, timeout=120)
        request = example_request("complete", hook=hook)
        listed = httpx.get(f"{base}/cds-services", timeout=30).json()["services"]
        service = next(s["id"] for s in listed if s["hook"] == hook)
        url = f"{base}/cds-services/{service}"
        answer = httpx.post(url, json=request, headers=ehr.authorization(url), timeout=30)
        print(
            f"\nCDS Hooks: {hook} for the example patient (a FHIR Bundle of "
            f"{len(request['prefetch']['bundle']['entry'])} resources) → HTTP "
            f"{answer.status_code}, the card:"
        )
        print(json.dumps(answer.json(), indent=2))
        cards = answer.json().get("cards", []) if answer.status_code == 200 else []
        if cards:
            _demo_feedback(url, cards[0], ehr)
    finally:
        process.terminate()
        process.wait(timeout=20)


def _demo_feedback(service_url: str, card: dict[str, Any], ehr: Any) -> None:
    """The clinician overrides the card, as the EHR reports it (CDS Hooks feedback). The
    free-text comment is sent, as EHRs do, and never stored."""
    import time
    from datetime import UTC, datetime

    import httpx

    reason = (card.get("overrideReasons") or [{}])[0]
    body = {"feedback": [{
        "card": card["uuid"], "outcome": "overridden",
        "outcomeTimestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "overrideReason": {"reason": {k: reason[k] for k in ("code", "system") if k in reason},
                           "userComment": "discussed with the patient at the bedside"},
    }]}  # fmt: skip
    url = f"{service_url}/feedback"
    deadline = time.monotonic() + 15
    while True:  # the prediction log is written just after the answer: 404 until it is
        answer = httpx.post(url, json=body, headers=ehr.authorization(service_url), timeout=30)
        if answer.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(
        f"feedback: the clinician overrode the card ({reason.get('display', 'no reason')}) → "
        f"HTTP {answer.status_code} {answer.text}"
    )
