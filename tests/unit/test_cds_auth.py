"""CDS Hooks client JWTs: accepted only from a trusted issuer, with its key, for this service,
unexpired, short-lived and used once; every other token is refused naming the failed check."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hospital_mlops.ehr.cds_auth import (
    AuthRejected,
    ReplayCache,
    TrustedClient,
    load_jwks,
    verify_call_token,
)

EHR = "https://ehr.hospital.example"
SERVICE = "https://cds.hospital.example/cds-services/readmission-risk-discharge"
NOW = 1_800_000_000.0
EC_KEY = ec.generate_private_key(ec.SECP384R1())
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = ec.generate_private_key(ec.SECP384R1())
P256_KEY = ec.generate_private_key(ec.SECP256R1())


def _jwk(public: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = ECAlgorithm if alg == "ES384" else RSAAlgorithm
    return {**json.loads(algorithm.to_jwk(public)), "kid": kid, "alg": alg, "use": "sig"}


CLIENTS = {
    EHR: TrustedClient(
        EHR,
        {
            "keys": [
                _jwk(EC_KEY.public_key(), "ec-1", "ES384"),
                _jwk(RSA_KEY.public_key(), "rsa-1", "RS384"),
            ]
        },
    )
}


def _token(key: Any = EC_KEY, alg: str = "ES384", kid: str | None = "ec-1", **claims: Any) -> str:
    body = {"iss": EHR, "sub": "ehr-client", "aud": SERVICE, "iat": NOW, "exp": NOW + 240,
            "jti": str(uuid.uuid4()), **claims}  # fmt: skip
    body = {k: v for k, v in body.items() if v is not None}
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def _verify(token: str, cache: ReplayCache | None = None, now: float = NOW) -> dict[str, Any]:
    return verify_call_token(token, CLIENTS, SERVICE, cache or ReplayCache(), now=now)


def test_a_signed_token_from_a_trusted_ehr_is_accepted_once() -> None:
    cache = ReplayCache()
    token = _token()
    assert _verify(token, cache)["sub"] == "ehr-client"
    with pytest.raises(AuthRejected, match="already used"):
        _verify(token, cache)
    # RS384 too: the spec's other required algorithm
    assert _verify(_token(RSA_KEY, "RS384", "rsa-1"), cache)["iss"] == EHR


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (lambda: _token(exp=NOW - 120), "expired"),
        (lambda: _token(aud="https://cds.hospital.example/cds-services/other"), r"not addressed"),
        (lambda: _token(iss="https://attacker.example"), "not a trusted client"),
        (lambda: _token(OTHER_KEY), "signature does not verify"),
        (lambda: _token(kid="unknown"), "not in the client's key set"),
        (lambda: _token(jti=None), "'jti'"),
        (lambda: _token(exp=NOW + 3600), "longer than five minutes"),
        (lambda: _token(P256_KEY, "ES256", "ec-1"), "algorithm 'ES256'"),
        (lambda: _token(iat=NOW + 600, exp=NOW + 700), "issued in the future"),
        (lambda: jwt.encode({"iss": EHR, "aud": SERVICE}, "secret", algorithm="HS256"), "HS256"),
        (lambda: "not.a.jwt", "not a JWT"),
    ],
)
def test_every_other_token_is_refused_naming_the_check(token, message) -> None:
    with pytest.raises(AuthRejected, match=message):
        _verify(token())


def test_an_unsigned_token_is_refused() -> None:
    unsigned = jwt.encode({"iss": EHR, "aud": SERVICE, "exp": NOW + 60}, None, algorithm="none")
    with pytest.raises(AuthRejected, match="algorithm 'none'"):
        _verify(unsigned)


def test_clock_skew_within_the_leeway_is_tolerated() -> None:
    assert _verify(_token(exp=NOW - 10))["iss"] == EHR


def test_the_replay_cache_forgets_expired_tokens_and_stays_bounded() -> None:
    cache = ReplayCache(max_entries=3)
    now = time.time()
    for n in range(5):
        assert cache.first_use(EHR, f"j{n}", now + 60, now)
    assert len(cache._seen) == 3
    assert not cache.first_use(EHR, "j4", now + 60, now)
    assert cache.first_use(EHR, "j4", now + 60, now + 1000)  # long expired: forgotten


def test_a_jwks_must_hold_keys() -> None:
    assert load_jwks(json.dumps(CLIENTS[EHR].jwks))["keys"]
    for bad in ("{", "[]", '{"keys": []}'):
        with pytest.raises(AuthRejected):
            load_jwks(bad)


def test_a_jku_header_is_never_fetched_the_keys_are_registered_out_of_band() -> None:
    """CDS Hooks lets a token name its key set's URL (``jku``); following it would let any
    token bring its own key. Only the keys registered for the issuer verify."""
    claims = {"iss": EHR, "aud": SERVICE, "iat": NOW, "exp": NOW + 240}
    forged = jwt.encode(
        {**claims, "jti": str(uuid.uuid4())},
        OTHER_KEY,
        algorithm="ES384",
        headers={"kid": "ec-1", "jku": "https://attacker.example/jwks.json"},
    )
    with pytest.raises(AuthRejected, match="signature does not verify"):
        _verify(forged)
    honest = jwt.encode(
        {**claims, "jti": str(uuid.uuid4())},
        EC_KEY,
        algorithm="ES384",
        headers={"kid": "ec-1", "jku": f"{EHR}/jwks.json"},
    )
    assert _verify(honest)["iss"] == EHR
