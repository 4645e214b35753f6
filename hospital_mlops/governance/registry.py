"""The MLflow model registry, read: versions, aliases, sign-offs, evidence and the verified model.

This module and ``registration`` (its writes) are the library's one gateway to MLflow; the rest
of the system asks them, never MLflow itself. A model version exists in the registry only if
every pre-declared gate passed; promotion to an alias such as ``champion`` requires every
sign-off role named in ``config/governance.yaml``.

The store is the local SQLite file (a laptop, the demo) or, on a cluster, an ``mlflow server``
over HTTP with PostgreSQL behind it and artifacts proxied through it (``mlflow-artifacts:``).
Every failure of the store reaches callers as one of this module's errors, with the store's URI
and the cause in a few words: a store that answers "no such model, version or alias" is a
RegistryError; one that fails (5xx, a refused or dropped connection, no answer in time) is a
RegistryUnavailable, never a missing version.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import pandas as pd

from hospital_mlops import artifacts
from hospital_mlops.paths import state_dir
from hospital_mlops.quiet import before_mlflow

# MLflow's HTTP client retries a failed request 7 times with exponential back-off (minutes) and
# waits 120 s for each answer. A registry that cannot be reached must fail in seconds instead.
# No retries at all: MLflow retries every method, POST included, so a retried request whose
# answer was lost (the server acted, then the connection dropped) registers a second version.
# A command is rerun, and a pod restarted, by whoever runs it. The operator's own values win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}

GATES_TAG = "gates.passed"
SIGNOFF_PREFIX = "signoff."


class RegistryUnavailable(RuntimeError):
    """The MLflow tracking/registry store cannot be reached or opened, or failed answering."""


class PromotionRefused(PermissionError):
    """A promotion lacks a passed gate or a required sign-off."""


class RegistryError(ValueError):
    """A model or version that does not exist, or a request that does not fit it."""


def tracking_uri() -> str:
    configured = os.environ.get("MLFLOW_TRACKING_URI")
    if configured:
        return configured
    directory = state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'mlflow.db'}"


def _bound_http_waits(uri: str) -> None:
    """For a store over HTTP(S), the waits of ``HTTP_DEFAULTS`` wherever the operator set none."""
    if uri.startswith(("http://", "https://")):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)


def client() -> Any:
    """An MlflowClient on the configured store, probed once so an unreachable store fails here
    with its URI, before anything is written."""
    before_mlflow()
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri()
    if uri == f"sqlite:///{state_dir() / 'mlflow.db'}":
        from hospital_mlops.governance.local_artifacts import use_for_local_store

        use_for_local_store(state_dir())  # movable, and readable by a reader that cannot write
    _bound_http_waits(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    c = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        c.search_experiments(max_results=1)
    except Exception as exc:
        # from None: the chained exception would print the credentials again
        raise RegistryUnavailable(
            f"the MLflow store at {redact(uri)} cannot be reached: {failure_cause(exc)}"
        ) from None
    return c


def failure_cause(exc: BaseException) -> str:
    """Why a store request failed, in a few words: an HTTP status, a refused or dropped
    connection, no answer in time; otherwise the exception's first line, without credentials.

    MLflow wraps the HTTP client's exception in a message of its own (a long URL, urllib3's
    retry wording) with the original as its cause or context: the chain says what happened."""
    from requests.exceptions import Timeout

    chain: list[BaseException] = []
    cursor: BaseException | None = exc
    while cursor is not None and cursor not in chain:
        chain.append(cursor)
        cursor = cursor.__cause__ or cursor.__context__
    text = " ".join(str(e) for e in chain)
    status = re.search(r"too many (\d{3}) error responses|error code (\d{3}) != 200", text)
    if status:
        return f"HTTP {status.group(1) or status.group(2)}"
    for e in chain:
        code = getattr(getattr(e, "response", None), "status_code", None)
        if code:
            return f"HTTP {code}"
    # a read timeout after the last retry reaches requests as a ConnectionError, not a Timeout
    if any(isinstance(e, Timeout) for e in chain) or re.search(r"Read timed out", text):
        timeout = os.environ.get("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
        return f"no answer within {timeout} s (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    if re.search(r"RemoteDisconnected|Connection aborted", text):
        return "the connection closed before an answer"
    errno = re.search(r"\[Errno -?\d+\] ([^)'\"]+)", text)
    if errno:
        return errno.group(1).strip().lower()
    uri = tracking_uri()
    first = (str(exc).splitlines() or [""])[0][:200].replace(uri, redact(uri))
    return f"{type(exc).__name__}: {_redact_userinfo(first)}"


def not_found(exc: Exception) -> bool:
    """The store answered that a model, version or alias does not exist (not that it failed)."""
    from mlflow.exceptions import MlflowException

    return isinstance(exc, MlflowException) and exc.error_code in (
        "RESOURCE_DOES_NOT_EXIST",
        "INVALID_PARAMETER_VALUE",  # an alias that points nowhere
    )


def _store_failure(exc: BaseException) -> RegistryUnavailable:
    return RegistryUnavailable(
        f"the MLflow store at {redact(tracking_uri())} failed: {failure_cause(exc)}"
    )


def raise_if_failure(exc: BaseException) -> None:
    """For a caller that treats "not there" as an answer (no champion yet, no evidence): return
    when the store refused the request (4xx: no such model, version, alias or artifact); raise
    RegistryUnavailable when it failed (5xx, no answer), which must never pass for "not there"
    (a rollout would then delete the champion alias it meant to restore)."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException) and 400 <= exc.get_http_status_code() < 500:
        return
    raise _store_failure(exc) from None


def evidence_file(run_id: str, artifact_path: str) -> Path | None:
    """One artifact of a run, downloaded; None only when the store holds no such file.

    MLflow's proxied-artifact client reports a failed listing as "no such artifact" (404,
    RESOURCE_DOES_NOT_EXIST) even when the server answered 503. So a refusal is checked by
    listing the file's directory: a listing that fails, or one that shows the file, means
    the store failed (RegistryUnavailable), never that the evidence is missing."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from requests import RequestException

    try:
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact_path))
    except OSError:
        return None  # the local store's file repository: no such file
    except (MlflowException, RequestException) as exc:
        raise_if_failure(exc)
        failed = exc
    parent = artifact_path.rsplit("/", 1)[0] if "/" in artifact_path else None
    try:
        listed = {f.path for f in client().list_artifacts(run_id, parent)}
    except (MlflowException, RequestException) as exc:
        raise_if_failure(exc)
        return None  # the directory itself is refused: nothing there
    if artifact_path in listed:
        raise _store_failure(failed) from None
    return None


def download_artifacts(run_id: str, artifact_path: str, dest: Path | None = None) -> Path:
    """A run's artifact directory (or file), downloaded under ``dest`` (MLflow's own temporary
    directory when None)."""
    import mlflow

    where = str(dest) if dest is not None else None
    return Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=where
        )
    )


def champion_version(model: str) -> str | None:
    """The version the ``champion`` alias points at; None when there is none (or no model)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client().get_model_version_by_alias(model, "champion").version)
    except MlflowException as exc:
        raise_if_failure(exc)
        return None


P = ParamSpec("P")
R = TypeVar("R")


def store_errors(func: Callable[P, R]) -> Callable[P, R]:
    """``func`` raising the registry's errors for the store's: a request the store refuses
    (4xx: no such model, version, alias or artifact) is a RegistryError with the store's reason;
    any other failure is a RegistryUnavailable naming the store and the cause."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from mlflow.exceptions import MlflowException
        from requests import RequestException

        try:
            return func(*args, **kwargs)
        except (MlflowException, RequestException) as exc:
            raise_if_failure(exc)
            reason = re.sub(r"^[A-Z_]+: ", "", str(exc).splitlines()[0])
            raise RegistryError(reason) from None

    return wrapper


def _redact_userinfo(text: str) -> str:
    return re.sub(r"://[^/@\s]+@", "://***@", text)


def redact(uri: str) -> str:
    """Never print credentials embedded in a tracking URI."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def experiment_for(c: Any, name: str) -> str:
    found = c.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = (state_dir() / "mlartifacts").resolve().as_uri()
    return str(c.create_experiment(name, artifact_location=location))


def _version(c: Any, model: str, version: int) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return c.get_model_version(model, str(version))
    except MlflowException as exc:
        if not_found(exc):
            raise RegistryError(f"model {model!r} has no version {version}") from exc
        raise _store_failure(exc) from None


def model_version(c: Any, model: str, version: int) -> Any:
    """The registry's record of one version; RegistryError when there is none."""
    return _version(c, model, version)


def signoffs(version: Any) -> dict[str, dict[str, str]]:
    return {
        k[len(SIGNOFF_PREFIX) :]: json.loads(v)
        for k, v in version.tags.items()
        if k.startswith(SIGNOFF_PREFIX)
    }


@store_errors
def show(model: str) -> dict[str, Any]:
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        registered = c.get_registered_model(model)
    except MlflowException as exc:
        if not_found(exc):
            raise RegistryError(f"no registered model named {model!r}") from exc
        raise _store_failure(exc) from None
    versions = sorted(c.search_model_versions(f"name='{model}'"), key=lambda v: int(v.version))
    aliases: dict[str, list[str]] = {}
    for alias, version in (registered.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    return {
        "name": model,
        "versions": [
            {
                "version": int(v.version),
                "run_id": v.run_id,
                "aliases": sorted(aliases.get(str(v.version), [])),
                "tags": {k: t for k, t in v.tags.items() if not k.startswith(SIGNOFF_PREFIX)},
                "signoffs": signoffs(v),
                "created": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC).isoformat(),
            }
            for v in versions
        ],
    }


class GoldenMismatch(RuntimeError):
    """A loaded model does not reproduce the predictions it was registered with."""


def model_uri(model: str, ref: str) -> str:
    """``models:/name/3`` for a version number, ``models:/name@champion`` for an alias."""
    return f"models:/{model}/{ref}" if ref.isdigit() else f"models:/{model}@{ref}"


@store_errors
def verify_golden(uri: str, tolerance: float = 1e-9) -> dict[str, Any]:
    """Load a registered model and check it reproduces its stored golden predictions; the
    serving layer runs this at start-up and refuses to serve on a mismatch."""
    import mlflow
    import numpy as np

    client()  # fail fast, with the store's URI, when the registry is unreachable
    loaded = mlflow.pyfunc.load_model(uri)
    run_id = loaded.metadata.run_id
    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="golden")
    golden = pd.read_parquet(Path(local) / artifacts.GOLDEN)
    expected = golden.pop("expected_risk").to_numpy()
    got = loaded.predict(golden)["risk"].to_numpy()
    worst = float(np.max(np.abs(got - expected)))
    if worst > tolerance:
        raise GoldenMismatch(
            f"{uri} does not reproduce its golden predictions: largest difference {worst:.3g} "
            f"over {len(expected)} rows (tolerance {tolerance:g})"
        )
    return {"model_uri": uri, "rows": len(expected), "max_abs_difference": worst}


def resolve(c: Any, model: str, ref: str) -> Any:
    from mlflow.exceptions import MlflowException

    if ref.isdigit():
        return _version(c, model, int(ref))
    if ref == "latest":
        versions = c.search_model_versions(f"name='{model}'")
        if not versions:
            raise RegistryError(f"model {model!r} has no versions")
        return max(versions, key=lambda v: int(v.version))
    try:
        return c.get_model_version_by_alias(model, ref)
    except MlflowException as exc:
        if not_found(exc):
            raise RegistryError(f"model {model!r} has no alias {ref!r}") from exc
        raise _store_failure(exc) from None


def training_record(version: Any) -> dict[str, Any]:
    import mlflow

    local = mlflow.artifacts.download_artifacts(
        run_id=version.run_id, artifact_path=artifacts.evidence(artifacts.TRAINING)
    )
    return dict(json.loads(Path(local).read_text()))


@store_errors
def compare(model: str, champion: str, challenger: str, store: Path) -> dict[str, Any]:
    """Score the challenger's own test slice with both versions and compare them on it."""
    import mlflow

    from hospital_mlops.data.snapshots import read_tables, verify_snapshot
    from hospital_mlops.data.splits import split_sha256, temporal_split
    from hospital_mlops.features import feature_set_for
    from hospital_mlops.governance.compare import CompareError, compare_scores
    from hospital_mlops.use_case import load_use_case

    c = client()
    versions = {
        "champion": resolve(c, model, champion),
        "challenger": resolve(c, model, challenger),
    }
    feature_sets = {k: v.tags.get("feature_set_version") for k, v in versions.items()}
    if feature_sets["champion"] != feature_sets["challenger"]:
        raise CompareError(
            f"the versions use different feature sets ({feature_sets}); they cannot score the "
            "same slice with one feature computation"
        )
    tags = versions["challenger"].tags
    source = tags.get("source", "")
    features_sha = tags.get("lineage.features_sha256", "")
    snapshot_dir = artifacts.published_features(store) / features_sha
    if not snapshot_dir.is_dir():
        raise CompareError(
            f"the challenger's feature snapshot {features_sha[:16]} is not in {store}; pass the "
            "store it was published to (--out)"
        )
    verify_snapshot(snapshot_dir)
    use_case = load_use_case()
    policy = use_case.for_source(source).split
    if split_sha256(features_sha, policy) != tags.get("lineage.split_sha256"):
        raise CompareError(
            "the split policy in config/use_case.yaml changed since the challenger was trained; "
            "its test slice cannot be rebuilt exactly"
        )
    fs = feature_set_for(source)
    test = temporal_split(read_tables(snapshot_dir)["features"], policy, fs.label).test
    inputs = test[[f.name for f in fs.features]]
    scores, thresholds = {}, {}
    primary = use_case.thresholds.primary
    for role, version in versions.items():
        loaded = mlflow.pyfunc.load_model(model_uri(model, str(version.version)))
        scores[role] = loaded.predict(inputs)["risk"].to_numpy()
        thresholds[role] = float(training_record(version)["thresholds"][primary])
    result = compare_scores(test[fs.label].to_numpy(), test["patient_token"], scores, thresholds)
    return {
        "model": model,
        "champion": {"ref": champion, "version": int(versions["champion"].version)},
        "challenger": {"ref": challenger, "version": int(versions["challenger"].version)},
        "slice": {"source": source, "features_sha256": features_sha, "period": "test"},
        **result,
    }


class ArtifactMismatch(RuntimeError):
    """The downloaded model files do not hash to the sha256 the registry recorded."""


class ModelRetired(RuntimeError):
    """The version was retired (docs/runbooks/retirement.md): it is never served again."""


RETIRED_TAG = "retired"


def retired(version: Any) -> dict[str, str] | None:
    """The retirement record of a registry version, or None while it is in service."""
    raw = version.tags.get(RETIRED_TAG)
    return json.loads(raw) if raw else None


def _refuse_retired(model: str, version: Any) -> None:
    record = version.tags.get(RETIRED_TAG)
    if record:
        why = json.loads(record)
        raise ModelRetired(
            f"{model} version {version.version} was retired on {why['at']} by {why['by']}: "
            f"{why['reason']}"
        )


@dataclass(frozen=True)
class LoadedModel:
    model: Any  # hospital_mlops.model.train.RiskModel
    version: int
    training: dict[str, Any]
    sha256: str  # verified against the version's ``lineage.model_sha256`` tag
    tags: dict[str, str]


@store_errors
def load_risk_model(model: str, ref: str) -> LoadedModel:
    """The registered version's own scoring function (not MLflow's wrapper), with its training
    record (thresholds); ``ref`` is a version number, an alias or ``latest``.

    The model files are hashed after download and must equal the sha256 recorded when the
    version was registered: a swapped or corrupted artifact is refused, not served."""
    import mlflow

    from hospital_mlops.model.train import model_hash

    c = client()
    version = resolve(c, model, ref)
    _refuse_retired(model, version)
    uri = model_uri(model, str(version.version))
    loaded = mlflow.pyfunc.load_model(uri)
    expected = version.tags.get("lineage.model_sha256", "")
    files = _risk_model_dir(loaded)
    actual = model_hash(files)
    if not expected:
        raise ArtifactMismatch(f"{uri} has no recorded model sha256; it cannot be verified")
    if actual != expected:
        raise ArtifactMismatch(
            f"{uri}: the model files hash to {actual[:16]}…, the registry recorded "
            f"{expected[:16]}…; the artifact was changed after registration"
        )
    risk_model = loaded.unwrap_python_model().model
    return LoadedModel(
        risk_model, int(version.version), training_record(version), actual, dict(version.tags)
    )


def _risk_model_dir(loaded: Any) -> Path:
    return Path(loaded._model_impl.context.artifacts["risk_model"])


def model_files(version: Any) -> Path:
    """The directory of a version's own model files (the pyfunc's ``risk_model`` artifact),
    downloaded; the caller verifies them against ``lineage.model_sha256``."""
    import mlflow

    return _risk_model_dir(mlflow.pyfunc.load_model(model_uri(version.name, str(version.version))))
