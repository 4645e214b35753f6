"""Run, compile and submit the data pipeline. The only library module that imports kfp, and only
inside functions: the domain modules stay orchestration-free.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from hospital_mlops.data.catalog import Catalog, load_catalog
from hospital_mlops.data.normalize import DEMO_HMAC_KEY, HMAC_KEY_ENV, load_hmac_key
from hospital_mlops.data.sources.extract import default_extract, preflight_extract
from hospital_mlops.deploy.container_engine import ContainerEngineError
from hospital_mlops.paths import project_root
from hospital_mlops.use_case import UseCaseError, load_use_case, purpose_of

RUNNERS = ("subprocess", "container")


def new_run_id() -> str:
    return f"run-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """kfp.local and component subprocesses print to fd 1; keep stdout for the JSON summary."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def local_subprocess_root(out: Path, kind: str) -> tuple[str, Path]:
    """A new run id and its kfp.local pipeline root under ``out/kind/``, with kfp.local set to
    run each component as a process of this venv, failing the call on a failed task."""
    from kfp import local

    run_id = new_run_id()
    root = out.resolve() / kind / run_id
    ensure_import_path()
    local.init(
        runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True
    )
    return run_id, root


def ensure_import_path() -> None:
    """Component subprocesses import ``hospital_mlops``; make the project importable for them."""
    root = str(project_root())
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *[p for p in paths if p]])


def resolve_extract(
    source: str,
    extract: Path | None,
    scenario: str | None,
    out: Path,
    *,
    synthetic_encounters: int = 20_000,
    seed: int = 7,
    catalog: Catalog | None = None,
) -> Path:
    spec = (catalog or load_catalog()).source(source)
    if extract is None:
        if spec.generator:  # a generated source: its own generator writes the extract
            from hospital_mlops.data.sources.extract import generate_extract

            target = out / "extracts" / f"{source}-n{synthetic_encounters}-s{seed}"
            if not (target / "extract.json").exists():  # the generator writes it last
                generate_extract(spec, target, synthetic_encounters, seed)
            extract = target
        else:
            extract = default_extract(source, spec)
    preflight_extract(extract, spec)
    if scenario:
        from hospital_mlops.data.faults import materialize_scenario

        extract = materialize_scenario(scenario, source, spec, extract, out / "extracts", seed=seed)
    return extract


def run_locally(
    *,
    source: str,
    use: str,
    extract: Path | None,
    scenario: str | None,
    out: Path,
    catalog: Path | None = None,
    demo_key: bool = False,
    synthetic_encounters: int = 20_000,
    seed: int = 7,
    train_model: bool = True,
    runner: str = "subprocess",
    image: str | None = None,
    use_case: str | None = None,
) -> dict[str, Any]:
    """Run the pipeline with kfp.local and return the run summary: each step a process of this
    venv (``subprocess``), or a container of the pipeline image (``container``, DockerRunner)."""
    from hospital_mlops.steps import data as data_steps

    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {RUNNERS}, not {runner!r}")
    if runner == "container" and not image:
        raise ContainerEngineError("--runner container needs --image (the pipeline image)")
    if runner == "subprocess" and image:
        raise ContainerEngineError("--image is for --runner container")
    cat = load_catalog(catalog)
    cat.require_use(source, use)  # refuse before anything is read
    if demo_key:
        os.environ[HMAC_KEY_ENV] = DEMO_HMAC_KEY
    load_hmac_key()  # refuse to start without a key
    from hospital_mlops.features import feature_set_for

    case = load_use_case(use_case=use_case)  # an unknown use case fails here
    try:  # and so does one without a feature set for this source
        feature_set_for(source, case.id)
    except KeyError as exc:
        raise UseCaseError(str(exc.args[0])) from None
    if train_model:
        from hospital_mlops.governance.config import load_governance
        from hospital_mlops.governance.registry import client

        case.for_source(source)  # no split or gates for this source: fails here
        load_governance()
        client()  # an unreachable registry fails before any data is read
    out = out.resolve()
    resolved = resolve_extract(
        source,
        extract,
        scenario,
        out,
        synthetic_encounters=synthetic_encounters,
        seed=seed,
        catalog=cat,
    )
    run_id = new_run_id()
    ctx = data_steps.RunContext(
        source, use, out, run_id, str(catalog) if catalog else None, use_case
    )

    arguments = {
        "run_id": run_id,
        "source": source,
        "use": use,
        "extract": str(resolved.resolve()),
        "store_root": str(out),
        "catalog_path": str(catalog.resolve()) if catalog else "",
        "use_case": use_case or "",
        "train_model": train_model,
    }
    if runner == "container":
        assert image is not None
        pinned = _run_in_containers(ctx, arguments, image, resolved, catalog, train_model)
    else:
        _run_in_subprocesses(ctx, arguments)
        pinned = None
    run = ctx.lineage.run(run_id)
    summary = run if run is not None else data_steps.finalize_run(ctx, expect_model=train_model)
    summary["lineage_path"] = str(ctx.lineage.runs / f"{run_id}.json")
    summary["extract"] = str(resolved)
    summary["scenario"] = scenario
    summary["runner"] = runner
    if pinned is not None:
        summary["image"] = pinned
    model_failed = summary.get("model_gates_passed") is False
    if (
        summary["status"] != "succeeded"
        and all(g["success"] for g in summary["gates"])
        and not model_failed
    ):
        summary["error"] = (
            "a pipeline step failed without a gate verdict; see the step log above and "
            f"{ctx.run_dir / 'kfp'}"
        )
    return summary


def _run_in_subprocesses(ctx: Any, arguments: dict[str, Any]) -> None:
    from kfp import local

    from pipelines.data_pipeline import make_pipeline

    ensure_import_path()
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(ctx.run_dir / "kfp"),
        raise_on_error=False,
    )
    with stdout_to_stderr():
        make_pipeline()(**arguments)


def _run_in_containers(
    ctx: Any,
    arguments: dict[str, Any],
    image: str,
    extract: Path,
    catalog: Path | None,
    train_model: bool,
) -> str:
    """Every step in a container of ``image``, pinned to its digest; returns that reference."""
    from kfp import local

    from hospital_mlops.deploy.container_engine import docker_api, resolve_image, step_container
    from hospital_mlops.paths import state_dir
    from pipelines.data_pipeline import make_pipeline

    settings = step_container(
        store_root=Path(arguments["store_root"]),
        extract=extract,
        catalog=catalog,
        registry_dir=state_dir() if train_model else None,
    )
    with docker_api(ctx.run_dir) as engine:
        pinned = resolve_image(image)
        print(f"running every step in {pinned} ({engine})", file=sys.stderr, flush=True)
        local.init(
            runner=local.DockerRunner(**settings.docker_run_args()),
            pipeline_root=str(ctx.run_dir / "kfp"),
            raise_on_error=False,
        )
        with stdout_to_stderr(), _step_exit_status_kept():
            make_pipeline(pinned)(**arguments)
    return pinned


@contextlib.contextmanager
def _step_exit_status_kept() -> Iterator[None]:
    """kfp 2.17's DockerRunner starts each step with ``auto_remove=True`` and reports SUCCESS
    when the container is gone before its exit status is read (kubeflow/pipelines#13332): with
    podman that is every failing step, so a failed gate let the next steps run. For this run its
    ``run_docker_container`` keeps the container until the status is read, then removes it. Drop
    this when kfp ships the fix (the container tests fail a gate and check the steps after it
    never ran)."""
    from kfp.local import docker_task_handler

    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = _run_step_container
    try:
        yield
    finally:
        docker_task_handler.run_docker_container = original


def _run_step_container(
    client: Any, image: str, command: list[str], volumes: dict[str, Any], **run_args: Any
) -> int:
    import docker

    container = client.containers.run(
        image=image,
        command=command,
        detach=True,
        stdout=True,
        stderr=True,
        volumes=volumes,
        auto_remove=False,
        **run_args,
    )
    print(f"step container {container.short_id} of {image}", flush=True)
    try:
        for line in container.logs(stream=True, follow=True):
            print(line.decode(errors="replace"), end="")
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            container.remove(force=True)


def compile_pipeline(out: Path, image: str | None = None) -> Path:
    from kfp import compiler

    from components.data_components import DEFAULT_IMAGE
    from pipelines.data_pipeline import make_pipeline

    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(make_pipeline(image or DEFAULT_IMAGE), str(out))
    validate_ir(out)
    return out


def validate_ir(path: Path) -> dict[str, Any]:
    """Strict proto parse of the compiled IR: unknown fields or wrong types raise."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    spec = pipeline_spec_pb2.PipelineSpec()
    json_format.ParseDict(docs[0], spec, ignore_unknown_fields=False)
    platform = pipeline_spec_pb2.PlatformSpec()
    if len(docs) > 1:
        json_format.ParseDict(docs[1], platform, ignore_unknown_fields=False)
    return {"pipeline": spec, "platform": platform}


KFP_HEALTHZ_PATH = "/apis/v2beta1/healthz"
PROBE_TIMEOUT_S = 5.0  # an unreachable host fails within this, not after kfp.Client's retries
TOKEN_HINT = (
    "pass a bearer token with --token-file FILE (kfp.Client's existing_token; e.g. "
    "`kubectl create token SERVICE_ACCOUNT --audience=pipelines.kubeflow.org`)"
)


class PipelineSubmitError(RuntimeError):
    """Submitting to a KFP host failed: one line naming the host, the step and what happened."""


def submit(args: Any) -> dict[str, Any]:
    """Submit the data pipeline to a KFP host: a quick health probe, then kfp.Client gets or
    creates the experiment and creates a run with the compiled (strictly validated) IR inline.
    Every failure raises :class:`PipelineSubmitError`."""
    import io
    import tempfile
    import warnings

    import kfp
    import kfp_server_api

    host = args.host if args.host.startswith("http") else f"https://{args.host}"  # as kfp.Client
    host = host.rstrip("/")
    token = _read_token(getattr(args, "token_file", None))
    _probe_health(host, token)

    run_id = new_run_id()
    step = "health check"
    kfp_output = io.StringIO()  # kfp prints experiment/run links; stdout stays the JSON result
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(Path(tmp) / "pipeline.yaml", image=args.image)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # "only works with KFP v2.0.0b2+"
                client = kfp.Client(host=host, existing_token=token)
            with contextlib.redirect_stdout(kfp_output):
                step = f"get or create experiment {args.experiment!r}"
                experiment = client.create_experiment(name=args.experiment)
                step = "create run"
                run = client.run_pipeline(
                    experiment_id=experiment.experiment_id,
                    job_name=run_id,
                    pipeline_package_path=str(package),
                    params={
                        "run_id": run_id,
                        "source": args.source,
                        "use": purpose_of(args.use, args.use_case),
                        "extract": args.input,
                        # only when chosen: the pipeline's default is the first use case
                        **({"use_case": args.use_case} if args.use_case else {}),
                    },
                    service_account=args.service_account,
                )
        except kfp_server_api.ApiException as exc:
            if not exc.status:  # no HTTP answer (TLS failure): the client's own wrapping
                raise PipelineSubmitError(
                    f"cannot reach the Kubeflow Pipelines host {host} at {step}: "
                    f"{_one_line(str(exc.reason))}"
                ) from None
            raise _http_error(host, step, exc.status, exc.body) from None
        except Exception as exc:
            if _is_connection_error(exc):
                raise PipelineSubmitError(
                    f"cannot reach the Kubeflow Pipelines host {host} at {step}: {_why(exc)}"
                ) from None
            # kfp's own refusals (ValueError: several experiments of that name; TimeoutError:
            # its health check gave up) and anything unforeseen: still one line
            raise PipelineSubmitError(
                f"submitting to the Kubeflow Pipelines host {host} failed at {step}: "
                f"{_one_line(str(exc) or type(exc).__name__)}"
            ) from exc
    sys.stderr.write(kfp_output.getvalue())
    return {"run_id": run_id, "kfp_run_id": run.run_id, "host": args.host}


def _read_token(path: Path | str | None) -> str | None:
    if not path:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise PipelineSubmitError(f"cannot read the token file {path}: {exc.strerror}") from None
    if not token:
        raise PipelineSubmitError(f"the token file {path} is empty")
    return token


def _probe_health(host: str, token: str | None) -> None:
    """GET the healthz endpoint once, with a timeout and the credentials kfp.Client will send:
    the client's own check has no timeout and retries with sleeps."""
    import json
    import ssl
    import urllib.error
    import urllib.request

    import certifi

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # a redirect (to a login page) surfaces as an HTTPError

    headers = {"Accept": "application/json", **_context_auth_headers()}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # kfp.Client ignores proxy variables too
        urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=certifi.where())),
        NoRedirect(),
    )
    request = urllib.request.Request(host + KFP_HEALTHZ_PATH, headers=headers)
    try:
        with opener.open(request, timeout=PROBE_TIMEOUT_S) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        if 300 <= exc.code < 400:
            raise PipelineSubmitError(
                f"the Kubeflow Pipelines host {host} refused authentication at health check "
                f"(HTTP {exc.code} redirect to {_one_line(exc.headers.get('Location', '?'), 120)}"
                f", a login page?); {TOKEN_HINT}"
            ) from None
        raise _http_error(host, "health check", exc.code, exc.read()) from None
    except (urllib.error.URLError, OSError) as exc:
        raise PipelineSubmitError(
            f"cannot reach the Kubeflow Pipelines host {host}: {_why(exc)}"
        ) from None
    try:
        json.loads(body or b"{}")
    except ValueError:
        raise PipelineSubmitError(
            f"the Kubeflow Pipelines host {host} answered the health check with something other "
            f"than the KFP API at {KFP_HEALTHZ_PATH} (is the URL right?)"
        ) from None


def _context_auth_headers() -> dict[str, str]:
    """The cookie or header kfp.Client takes from its context file, so the probe authenticates
    the same way the client will."""
    import json

    import kfp

    try:
        context = json.loads(Path(kfp.Client._LOCAL_KFP_CONTEXT).read_text())
    except (OSError, ValueError):
        return {}
    headers = {}
    if context.get("client_authentication_cookie"):
        headers["Cookie"] = str(context["client_authentication_cookie"])
    name, value = (
        context.get("client_authentication_header_name"),
        context.get("client_authentication_header_value"),
    )
    if name and value:
        headers[str(name)] = str(value)
    return headers


def _http_error(host: str, step: str, status: int, body: Any) -> PipelineSubmitError:
    said = _server_message(body)
    detail = f"HTTP {status}: {said}" if said else f"HTTP {status}"
    if status == 401:
        return PipelineSubmitError(
            f"the Kubeflow Pipelines host {host} refused authentication at {step} ({detail}); "
            f"{TOKEN_HINT}"
        )
    if status == 403:
        return PipelineSubmitError(
            f"the Kubeflow Pipelines host {host} refused authorization at {step} ({detail}): "
            "the credentials' identity may not do this; pass one that may with --token-file FILE"
        )
    return PipelineSubmitError(f"the Kubeflow Pipelines host {host} rejected {step}: {detail}")


def _server_message(body: Any) -> str:
    """KFP answers errors as JSON with ``message`` (v2) or ``error`` (v1); otherwise the text."""
    import json

    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    text = str(body or "").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        text = str(data.get("message") or data.get("error") or text)
    return _one_line(text)


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its ``reason`` (urllib, urllib3) and its causes, outermost first."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [
            c
            for c in (getattr(e, "reason", None), e.__cause__, e.__context__)
            if isinstance(c, BaseException)
        ]


def _is_connection_error(exc: BaseException) -> bool:
    import socket

    import urllib3

    network = (urllib3.exceptions.HTTPError, ConnectionError, socket.gaierror)
    return any(isinstance(e, network) for e in _causes(exc))


def _why(exc: BaseException) -> str:
    import socket
    import ssl

    import urllib3

    chain = list(_causes(exc))
    for e in chain:
        if isinstance(e, ConnectionRefusedError) or "Connection refused" in str(e):
            return "connection refused"
    for e in chain:
        if isinstance(e, (socket.gaierror, urllib3.exceptions.NameResolutionError)):
            return "the host name does not resolve"
    for e in chain:
        if isinstance(e, (TimeoutError, socket.timeout, urllib3.exceptions.TimeoutError)):
            return f"no answer within {PROBE_TIMEOUT_S:g}s"
    for e in chain:
        if isinstance(e, ssl.SSLError):
            return f"TLS failed ({_one_line(str(e.reason or e), 120)})"
    for e in chain:
        if isinstance(e, ConnectionError):
            return _one_line(e.strerror or type(e).__name__, 120)
    return _one_line(str(chain[-1]) or type(chain[-1]).__name__, 200)
