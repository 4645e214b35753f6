"""CDS Hooks 2.0 client authentication: the EHR signs a short-lived JWT for each call, and the
service accepts it only from a trusted issuer, signed with one of that issuer's keys (its JWKS),
addressed to this service, unexpired, and never seen before.

Pure: the caller supplies the trusted clients (each with its JWK set) and the replay cache. The
token itself is never logged or echoed; a rejection says which check failed.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

# CDS Hooks 2.0: services MUST support ES384 and RS384; nothing weaker, and never "none" or an
# HMAC (a public key used as an HMAC secret is the classic algorithm-confusion attack).
ALGORITHMS = ("ES384", "RS384")
MAX_LIFETIME_SECONDS = 300  # the spec: exp no more than five minutes after iat
LEEWAY_SECONDS = 30  # clock skew between the EHR and this service
REQUIRED_CLAIMS = ("iss", "aud", "exp", "iat", "jti")


class AuthRejected(ValueError):
    """A call that is not authenticated (HTTP 401); the message names the failed check."""


@dataclass(frozen=True)
class TrustedClient:
    """An EHR (or other CDS client) allowed to call: its ``iss`` and its public keys."""

    iss: str
    jwks: Mapping[str, Any]  # {"keys": [JWK, ...]}

    def key_for(self, kid: str | None, alg: str) -> Any:
        keys = [k for k in self.jwks.get("keys", []) if isinstance(k, Mapping)]
        if kid is not None:
            keys = [k for k in keys if k.get("kid") == kid]
        elif len(keys) != 1:
            raise AuthRejected("the token names no key (kid) and the client has several")
        if not keys:
            raise AuthRejected("the token's key (kid) is not in the client's key set")
        try:
            return jwt.PyJWK(dict(keys[0]), algorithm=alg).key
        except (jwt.PyJWKError, jwt.InvalidKeyError) as exc:
            raise AuthRejected(f"the client's key cannot verify {alg}: {exc}") from None


@dataclass
class ReplayCache:
    """The ``jti`` of every accepted token until it expires: a second use is a replay. Bounded;
    when full, the oldest entries go first (they expire first)."""

    max_entries: int = 100_000
    _seen: dict[tuple[str, str], float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def first_use(self, iss: str, jti: str, expires: float, now: float) -> bool:
        with self._lock:
            for key in [k for k, exp in self._seen.items() if exp + LEEWAY_SECONDS < now]:
                del self._seen[key]
            if (iss, jti) in self._seen:
                return False
            while len(self._seen) >= self.max_entries:
                del self._seen[min(self._seen, key=self._seen.__getitem__)]
            self._seen[(iss, jti)] = expires
            return True


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise AuthRejected("the bearer token is not a JWT") from None
    return header, claims


def verify_call_token(
    token: str,
    clients: Mapping[str, TrustedClient],
    audience: str,
    cache: ReplayCache,
    now: float | None = None,
) -> dict[str, Any]:
    """The token's claims when every check passes; otherwise ``AuthRejected``."""
    now = time.time() if now is None else now
    header, unverified = _unverified(token)
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise AuthRejected(f"algorithm {str(alg)[:10]!r} is not accepted (use ES384 or RS384)")
    iss = unverified.get("iss")
    client = clients.get(iss) if isinstance(iss, str) else None
    if client is None:
        raise AuthRejected("the token's issuer (iss) is not a trusted client")
    key = client.key_for(header.get("kid"), alg)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=[alg],
            audience=audience,
            issuer=client.iss,
            # times are checked below against ``now`` (one clock, testable)
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidAudienceError:
        raise AuthRejected("the token is not addressed to this service (aud)") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthRejected(f"the token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidSignatureError:
        raise AuthRejected("the token's signature does not verify") from None
    except jwt.PyJWTError as exc:
        raise AuthRejected(f"the token is invalid: {type(exc).__name__}") from None
    try:
        expires, issued = float(claims["exp"]), float(claims["iat"])
    except (TypeError, ValueError):
        raise AuthRejected("the token's exp and iat must be numbers") from None
    if now > expires + LEEWAY_SECONDS:
        raise AuthRejected("the token has expired")
    if issued > now + LEEWAY_SECONDS:
        raise AuthRejected("the token is issued in the future (iat)")
    if expires - now > MAX_LIFETIME_SECONDS + LEEWAY_SECONDS:
        raise AuthRejected("the token lives longer than five minutes")
    if not cache.first_use(client.iss, str(claims["jti"]), expires, now):
        raise AuthRejected("the token was already used (jti replayed)")
    return claims


TRUSTED_CLIENTS_ENV = "HMLOPS_CDS_TRUSTED_CLIENTS"


def load_trusted_clients(text: str) -> dict[str, TrustedClient]:
    """``[{"iss": ..., "jwks": {"keys": [...]}}, ...]`` (public keys only: not a secret; on a
    cluster a mounted ConfigMap) → the clients by issuer."""
    try:
        entries = json.loads(text)
    except json.JSONDecodeError:
        raise AuthRejected("the trusted clients file is not JSON") from None
    if not isinstance(entries, list) or not entries:
        raise AuthRejected("the trusted clients file must be a non-empty list")
    clients: dict[str, TrustedClient] = {}
    for n, entry in enumerate(entries):
        iss = entry.get("iss") if isinstance(entry, dict) else None
        if not isinstance(iss, str) or not iss.startswith("https://"):
            raise AuthRejected(f"trusted client {n}: iss must be an https:// URL")
        if iss in clients:
            raise AuthRejected(f"trusted client {n}: {iss} is listed twice")
        clients[iss] = TrustedClient(iss, load_jwks(json.dumps(entry.get("jwks"))))
    return clients


DEMO_ISSUER = "https://demo-ehr.hospital-mlops.invalid"


@dataclass(frozen=True)
class DemoClient:
    """A labelled demo EHR for `make demo` and the benchmarks: a fresh key pair, its trusted
    clients file, and the signing an EHR does per call. Never a real client's key."""

    trusted_clients_file: Path
    private_key: Any

    @classmethod
    def create(cls, directory: Path) -> DemoClient:
        from cryptography.hazmat.primitives.asymmetric import ec
        from jwt.algorithms import ECAlgorithm

        key = ec.generate_private_key(ec.SECP384R1())
        jwk = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "demo-1"}
        path = directory / "demo-trusted-clients.json"
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"iss": DEMO_ISSUER, "jwks": {"keys": [jwk]}}]))
        return cls(path, key)

    def authorization(self, audience: str) -> dict[str, str]:
        now = time.time()
        claims = {"iss": DEMO_ISSUER, "sub": "demo-ehr", "aud": audience, "iat": now,
                  "exp": now + 240, "jti": uuid.uuid4().hex}  # fmt: skip
        token = jwt.encode(claims, self.private_key, algorithm="ES384", headers={"kid": "demo-1"})
        return {"Authorization": f"Bearer {token}"}


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthRejected("an Authorization: Bearer <JWT> header is required")
    return token.strip()


def load_jwks(text: str) -> dict[str, Any]:
    """A JWK set from its JSON text, checked for shape (the keys are parsed when used)."""
    try:
        jwks = json.loads(text)
    except json.JSONDecodeError:
        raise AuthRejected("the client's JWK set is not JSON") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise AuthRejected('the client\'s JWK set needs a non-empty "keys" list')
    return jwks
