"""Access-token verification: tries to break it with forged, stale and odd tokens, a JWKS
that goes away, key rotation and kid floods. Real HTTP JWKS server, real Ed25519 keys."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fixtures_issuer import SigningKey
from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.errors import ServiceUnavailable, Unauthorized

class Clocks:
    """A monotonic and a wall clock the test moves by hand (starting at the real ones)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def monotonic(self) -> float:
        return time.monotonic() + self.offset

    def wall(self) -> float:
        return time.time() + self.offset


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_token(header: dict[str, Any], claims: dict[str, Any], sign: Any = None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64url(signature)}"


async def expect_401(verifier: AccessTokenVerifier, token: str) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(token)
    return caught.value


# --- over HTTP on the shared app --------------------------------------------------------


async def test_valid_token_is_accepted_and_me_reports_the_user(client, issuer, user_id):
    token = issuer.mint(user_id)
    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user_id
    assert body["email"] is None  # access tokens carry no email (shared-schemas/jwt-claims.schema.json)
    assert body["expires_at"] == jwt.decode(token, options={"verify_signature": False})["exp"]


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Token abc", "bearer", "Bearer not-a-jwt",
     "Bearer a.b.c", "Bearer " + "x" * 5000],
    ids=["missing", "empty", "bearer-no-token", "bearer-space", "basic", "other-scheme", "lowercase-only",
         "not-a-jwt", "garbage-segments", "huge"],
)
async def test_missing_or_malformed_authorization_is_401_json(client, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await client.get("/me", headers=headers)
    assert response.status_code == 401
    error = response.json()["error"]
    assert error["code"] == "unauthorized"
    assert error["message"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_expired_token_over_http_has_its_own_code(client, issuer, user_id):
    token = issuer.mint(user_id, exp=int(time.time()) - 120)
    response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "token_expired"


async def test_jwks_unreachable_on_cold_cache_is_503_over_http(app_factory, runtime, make_settings, isolated_issuer):
    settings = make_settings(auth_jwks_url=isolated_issuer.jwks_url)
    isolated_issuer.stop()
    cold = dataclasses.replace(runtime, token_verifier=AccessTokenVerifier(settings))
    try:
        async with app_factory(settings, runtime=cold) as (_, client):
            token = isolated_issuer.mint("someone")
            response = await client.get("/me", headers={"Authorization": f"Bearer {token}"})
    finally:
        await cold.token_verifier.aclose()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "auth_unavailable"


# --- the verifier directly (private issuers we can break) ---------------------------------


async def test_rejects_forged_and_invalid_claims(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    now = int(time.time())
    assert (await verifier.verify(isolated_issuer.mint("u1")))["sub"] == "u1"
    bad_tokens = {
        "expired": isolated_issuer.mint("u1", exp=now - 60),
        "not yet valid": isolated_issuer.mint("u1", nbf=now + 120),
        "no iat": isolated_issuer.mint("u1", iat=None),
        "no exp": isolated_issuer.mint("u1", exp=None),
        "no iss": isolated_issuer.mint("u1", iss=None),
        "no aud": isolated_issuer.mint("u1", aud=None),
        "wrong iss": isolated_issuer.mint("u1", iss="http://evil.test"),
        "wrong aud": isolated_issuer.mint("u1", aud="another-service"),
        "no sub": isolated_issuer.mint("u1", sub=None),
        "empty sub": isolated_issuer.mint("u1", sub=""),
        "numeric sub": isolated_issuer.mint("u1", sub=12345),
        "foreign key, same kid": isolated_issuer.mint(
            "u1", key=SigningKey(kid=isolated_issuer.current_key.kid)),
        "unknown kid": isolated_issuer.mint("u1", kid="no-such-kid"),
    }
    for name, token in bad_tokens.items():
        error = await expect_401(verifier, token)
        assert error.status_code == 401, name


async def test_leeway_and_audience_list(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer, jwt_leeway_seconds=5)
    now = int(time.time())
    assert await verifier.verify(isolated_issuer.mint("u1", exp=now - 2))  # within leeway
    assert await verifier.verify(isolated_issuer.mint("u1", aud=["other", "rag-service"]))
    await expect_401(verifier, isolated_issuer.mint("u1", aud=["other"]))


async def test_alg_none_and_hmac_confusion_never_reach_the_jwks(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    key = isolated_issuer.current_key
    claims = isolated_issuer.claims("attacker")
    public_raw = key.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    public_pem = key.private_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    forged = {
        "alg none": hand_made_token({"alg": "none", "kid": key.kid}, claims),
        "alg None": hand_made_token({"alg": "None", "kid": key.kid}, claims),
        "no alg": hand_made_token({"kid": key.kid, "typ": "JWT"}, claims),
    }
    for secret_name, secret in {"raw": public_raw, "pem": public_pem, "jwk-x": key.public_jwk["x"].encode()}.items():
        for alg, digest in {"HS256": hashlib.sha256, "HS512": hashlib.sha512}.items():
            forged[f"{alg} with public {secret_name}"] = hand_made_token(
                {"alg": alg, "kid": key.kid}, claims, lambda data, s=secret, d=digest: hmac.new(s, data, d).digest())
    for name, token in forged.items():
        await expect_401(verifier, token)
    assert isolated_issuer.jwks_requests == 0, "forged algorithms must be rejected before any key lookup"


async def test_alg_must_match_the_key(make_verifier, isolated_issuer):
    """ES256 is allowed, but the kid points at an Ed25519 key: rejected."""
    verifier = make_verifier(isolated_issuer)
    key = isolated_issuer.current_key
    token = hand_made_token({"alg": "ES256", "kid": key.kid}, isolated_issuer.claims("u1"),
                            lambda data: key.private_key.sign(data))
    await expect_401(verifier, token)


async def test_tampered_payload_is_rejected(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    header, _, signature = isolated_issuer.mint("victim").split(".")
    payload = b64url(json.dumps(isolated_issuer.claims("attacker")).encode())
    await expect_401(verifier, f"{header}.{payload}.{signature}")


async def test_kid_less_tokens_only_with_a_single_key(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer, jwks_refetch_min_interval=0)
    assert (await verifier.verify(isolated_issuer.mint("u1", kid=None)))["sub"] == "u1"
    isolated_issuer.rotate(keep_old=True)
    await verifier.verify(isolated_issuer.mint("u1"))  # new kid -> refetch -> two keys now
    await expect_401(verifier, isolated_issuer.mint("u1", kid=None))


async def test_kid_flood_costs_at_most_one_jwks_fetch_per_interval(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer, jwks_refetch_min_interval=60)
    await verifier.verify(isolated_issuer.mint("u1"))
    assert isolated_issuer.jwks_requests == 1
    flood = [isolated_issuer.mint("u1", kid=uuid.uuid4().hex) for _ in range(50)]
    results = await asyncio.gather(*(verifier.verify(t) for t in flood), return_exceptions=True)
    assert all(isinstance(r, Unauthorized) for r in results)
    assert isolated_issuer.jwks_requests <= 2
    # The good key still works after the flood, without another fetch.
    before = isolated_issuer.jwks_requests
    await verifier.verify(isolated_issuer.mint("u1"))
    assert isolated_issuer.jwks_requests == before


async def test_key_rotation_is_picked_up_without_restart(make_verifier, isolated_issuer):
    clocks = Clocks()
    verifier = make_verifier(isolated_issuer, clocks, jwks_refetch_min_interval=60)
    old_token = isolated_issuer.mint("u1")
    await verifier.verify(old_token)
    new_key = isolated_issuer.rotate(keep_old=False)
    new_token = isolated_issuer.mint("u1", key=new_key)
    await expect_401(verifier, new_token)  # within the refetch interval: not fetched yet
    clocks.advance(60)  # the refetch interval has passed
    assert (await verifier.verify(new_token))["sub"] == "u1"
    # The old key was withdrawn by the issuer and is gone from the refreshed cache.
    await expect_401(verifier, old_token)


async def test_new_kid_within_refetch_interval_fails_closed(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer, jwks_refetch_min_interval=60)
    await verifier.verify(isolated_issuer.mint("u1"))
    isolated_issuer.rotate()
    await expect_401(verifier, isolated_issuer.mint("u1"))
    assert isolated_issuer.jwks_requests == 1


async def test_jwks_unreachable_on_cold_cache_is_503_then_recovers(make_verifier, isolated_issuer):
    clocks = Clocks()
    verifier = make_verifier(isolated_issuer, clocks)
    token = isolated_issuer.mint("u1")
    isolated_issuer.stop()
    with pytest.raises(ServiceUnavailable) as caught:
        await verifier.verify(token)
    assert caught.value.status_code == 503
    isolated_issuer.start()  # same port
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(token)  # the next attempt waits its second, even with the issuer back
    clocks.advance(1.0)  # cold-cache retries are spaced by at most one second
    assert (await verifier.verify(token))["sub"] == "u1"


async def test_jwks_bad_document_on_cold_cache_is_503(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    isolated_issuer.jwks = lambda: {"not": "a jwks"}  # type: ignore[method-assign]
    with pytest.raises(ServiceUnavailable):
        await verifier.verify(isolated_issuer.mint("u1"))


async def test_jwks_down_with_warm_cache_keeps_known_kids_only(make_verifier, isolated_issuer):
    # Cache lifetime 0: every verification wants a refresh, so this also covers a cache
    # that expired while the auth-service is down.
    verifier = make_verifier(isolated_issuer, jwks_cache_seconds=0, jwks_refetch_min_interval=0)
    await verifier.verify(isolated_issuer.mint("u1"))
    isolated_issuer.stop()
    assert (await verifier.verify(isolated_issuer.mint("u2")))["sub"] == "u2"
    await expect_401(verifier, isolated_issuer.mint("u1", kid="unknown-kid"))
    await expect_401(verifier, isolated_issuer.mint("u1", key=SigningKey()))


async def test_hmac_keys_in_the_jwks_are_never_used(make_verifier, isolated_issuer):
    """An `oct` key published in the JWKS must not turn HS256 tokens valid."""
    secret = b"published-secret"
    oct_jwk = {"kty": "oct", "kid": "hmac", "k": b64url(secret), "alg": "HS256"}
    original = isolated_issuer.jwks
    isolated_issuer.jwks = lambda: {"keys": [*original()["keys"], oct_jwk]}  # type: ignore[method-assign]
    verifier = make_verifier(isolated_issuer)
    token = hand_made_token({"alg": "HS256", "kid": "hmac"}, isolated_issuer.claims("u1"),
                            lambda data: hmac.new(secret, data, hashlib.sha256).digest())
    await expect_401(verifier, token)
    assert await verifier.verify(isolated_issuer.mint("u1"))


async def test_keys_embedded_in_the_token_header_are_ignored(make_verifier, isolated_issuer):
    """An attacker's own key in `jwk`/`jku` headers must not be trusted."""
    verifier = make_verifier(isolated_issuer)
    attacker = SigningKey(kid=isolated_issuer.current_key.kid)
    token = isolated_issuer.mint("victim", key=attacker, headers={
        "jwk": attacker.public_jwk, "jku": "http://evil.test/jwks"})
    await expect_401(verifier, token)
    await expect_401(verifier, "e" * 20_000)


async def test_subject_longer_than_the_owner_columns_is_401(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    assert (await verifier.verify(isolated_issuer.mint("u" * 255)))["sub"] == "u" * 255
    error = await expect_401(verifier, isolated_issuer.mint("u" * 256))
    assert "255" in error.message


async def test_a_remembered_token_still_expires(make_verifier, isolated_issuer):
    clocks = Clocks()
    verifier = make_verifier(isolated_issuer, clocks, jwt_leeway_seconds=0)
    token = isolated_issuer.mint("u1", exp=int(time.time()) + 600)
    assert (await verifier.verify(token))["sub"] == "u1"  # verified, and remembered
    clocks.advance(300)
    assert (await verifier.verify(token))["sub"] == "u1"
    clocks.advance(300)  # at or past its `exp`
    assert (await expect_401(verifier, token)).code == "token_expired"


async def test_remembered_claims_cannot_be_changed_by_a_caller(make_verifier, isolated_issuer):
    verifier = make_verifier(isolated_issuer)
    token = isolated_issuer.mint("u1", scope="read")
    first = await verifier.verify(token)
    first["scope"] = "write"
    first["sub"] = "someone-else"
    again = await verifier.verify(token)
    assert (again["sub"], again["scope"]) == ("u1", "read")
    assert isolated_issuer.jwks_requests == 1
