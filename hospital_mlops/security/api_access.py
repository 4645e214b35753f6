"""Who may call the local predictor, explainer, drift detector and feedback API, and the record
of who accessed which prediction.

Tokens: ``HMLOPS_API_TOKENS_FILE`` names a JSON file of clients, each with the sha256 of its
bearer token (never the token itself: whoever reads the file cannot call the API). When it is
set, every endpoint but the health probes needs ``Authorization: Bearer <token>``. A client
that calls another server (the explainer → the predictor, the CDS service → the predictor, the
local inference logger → the detector) sends its own token from ``HMLOPS_API_TOKEN``.
``hmlops auth add-client`` makes a token, prints it once and records its hash.

On a cluster the mesh does this job (Istio ``AuthorizationPolicy`` by workload identity; see
docs/security.md), because KServe's own agent and Knative's triggers carry no such token.

Access audit: one JSON line per request that reaches a prediction (scored, explained, read,
given feedback): when, who, which service, method and path, status, and the prediction ids in
the answer. No body, no header value, no clinical input is ever written.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TOKENS_FILE_ENV = "HMLOPS_API_TOKENS_FILE"
CLIENT_TOKEN_ENV = "HMLOPS_API_TOKEN"
ACCESS_LOG_ENV = "HMLOPS_ACCESS_LOG"
PUBLIC_PATHS = frozenset({"/", "/v2/health/live", "/v2/health/ready", "/healthz", "/v2"})
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_PREDICTION_ID = re.compile(
    rb'"(?:prediction_id|uuid|card)"\s*:\s*"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-'
    rb'[0-9a-f]{12})"'
)
_UUID_IN_PATH = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class ApiTokensError(ValueError):
    """The tokens file is missing, unreadable, or not what it should be."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class ApiTokens:
    by_hash: dict[str, str]  # sha256 of the token → client name

    def client(self, authorization: str | None) -> str | None:
        """The client a ``Bearer`` header belongs to, or None."""
        if not authorization or not authorization.startswith("Bearer "):
            return None
        presented = token_hash(authorization[len("Bearer ") :].strip())
        found = None
        for known, name in self.by_hash.items():  # no early exit: the same work for every token
            if hmac.compare_digest(known, presented):
                found = name
        return found


def load_tokens(path: Path) -> ApiTokens:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ApiTokensError(f"{TOKENS_FILE_ENV}: {path} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise ApiTokensError(f"{TOKENS_FILE_ENV}: {path} is not readable JSON: {exc}") from exc
    clients = raw.get("clients") if isinstance(raw, dict) else None
    if not isinstance(clients, dict) or not clients:
        raise ApiTokensError(f"{path}: needs a non-empty 'clients' mapping of name → sha256")
    by_hash: dict[str, str] = {}
    for name, entry in clients.items():
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if not _NAME.match(str(name)):
            raise ApiTokensError(f"{path}: client name {name!r} must be lower-case a-z0-9._-")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ApiTokensError(f"{path}: clients.{name}.sha256 must be 64 hex characters")
        if digest in by_hash:
            raise ApiTokensError(f"{path}: clients {by_hash[digest]} and {name} share a token")
        by_hash[digest] = str(name)
    return ApiTokens(by_hash)


def tokens_from_env(env: dict[str, str] | None = None) -> ApiTokens | None:
    """The configured tokens, or None when the endpoints are open (no tokens file set)."""
    value = (os.environ if env is None else env).get(TOKENS_FILE_ENV)
    return load_tokens(Path(value)) if value else None


def add_client(path: Path, name: str) -> str:
    """Make a token for ``name``, record its hash in ``path`` (created if need be), return it.
    The token is shown once; only its hash is kept."""
    if not _NAME.match(name):
        raise ApiTokensError(f"client name {name!r} must be lower-case a-z0-9._- (≤ 63)")
    clients: dict[str, Any] = {}
    if path.exists():
        clients = dict(json.loads(path.read_text()).get("clients", {}))
    if name in clients:
        raise ApiTokensError(f"{path} already has a client {name!r}; remove it to replace it")
    token = secrets.token_urlsafe(32)
    clients[name] = {
        "sha256": token_hash(token),
        "added": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(json.dumps({"clients": clients}, indent=2, sort_keys=True) + "\n")
    partial.chmod(0o600)
    os.replace(partial, path)
    return token


def client_headers(env: dict[str, str] | None = None) -> dict[str, str]:
    """The Authorization header a calling server sends, when it has a token."""
    token = (os.environ if env is None else env).get(CLIENT_TOKEN_ENV)
    return {"authorization": f"Bearer {token}"} if token else {}


def prediction_ids(path: str, body: bytes) -> list[str]:
    """Prediction ids a request touched: in the path (read by id) or in the answer."""
    found = _UUID_IN_PATH.findall(path)
    found += [m.decode() for m in _PREDICTION_ID.findall(body)]
    return list(dict.fromkeys(found))


class AccessLog:
    """Append-only JSON lines; one ``write`` per record on an O_APPEND descriptor, so the
    servers of one host can share a file without interleaving. ``None``: standard output (a
    pod's, which the cluster's log pipeline keeps; each line says ``"kind": "hmlops.access"``)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is None:
            self._fd, self._owned = 1, False
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._owned = True
        self._lock = threading.Lock()

    def record(
        self, *, who: str, service: str, method: str, path: str, status: int, ids: list[str]
    ) -> None:
        line = json.dumps({
            "kind": "hmlops.access", "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "who": who, "service": service, "method": method, "path": path[:200],
            "status": status, "prediction_ids": ids[:1000],
        }) + "\n"  # fmt: skip
        with self._lock:
            os.write(self._fd, line.encode())

    def close(self) -> None:
        if self._owned:
            os.close(self._fd)


def read_access_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if '"kind": "hmlops.access"' in line]


def access_log_from_env(env: dict[str, str] | None = None) -> AccessLog:
    """The access log: ``HMLOPS_ACCESS_LOG`` (a path, or ``-`` for standard output, as the pods
    set it), else ``access-audit.jsonl`` in the state directory."""
    from hospital_mlops.paths import writable_state_dir

    value = (os.environ if env is None else env).get(ACCESS_LOG_ENV)
    if value == "-":
        return AccessLog(None)
    return AccessLog(Path(value) if value else writable_state_dir() / "access-audit.jsonl")
