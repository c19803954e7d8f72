"""API keys as bearer tokens (auth/api_keys.py, auth/bearer.py): `Authorization: Bearer rag_…`
works wherever an access JWT does, with the key's scope; the auth-service's answer is cached
for API_KEY_CACHE_SECONDS by the key's hash; a revoked key is refused once that has passed; a
key never reaches a log or a response. The auth-service is the test issuer's stand-in
(fixtures_issuer.py: the same exchange route and answers); tests-e2e/test_agents.py runs the
same against the real auth-service."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest

from rag_service.auth.api_keys import ApiKeyVerifier, api_key_exchange_url
from rag_service.auth.bearer import BearerAuthenticator
from rag_service.auth.membership_changes import MembershipChanges
from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.errors import RateLimited, ServiceUnavailable, Unauthorized

TEXT = "Herons stand motionless in shallow water and spear fish with their long bills."


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key_settings(make_settings: Any) -> Any:
    return make_settings(api_key_cache_seconds=10)


@pytest.fixture
async def verifier(key_settings: Any) -> Any:
    clock = Clock()
    tokens = AccessTokenVerifier(key_settings)
    keys = ApiKeyVerifier(key_settings, tokens, clock=clock)
    yield keys, clock
    await keys.aclose()
    await tokens.aclose()


def test_the_exchange_url_is_better_auths_route_beside_the_jwks(make_settings: Any, issuer: Any) -> None:
    assert api_key_exchange_url(make_settings()) == f"http://127.0.0.1:{issuer.port}/api/auth/api-key/token"
    assert api_key_exchange_url(make_settings(auth_api_key_exchange_url="http://a/x")) == "http://a/x"


async def test_a_write_key_works_like_its_owners_jwt_on_the_rest_routes(client: Any, issuer: Any,
                                                                       auth_headers: Any, user_id: str) -> None:
    key = issuer.add_api_key(user_id, "write")
    me = await client.get("/me", headers=bearer(key))
    assert me.status_code == 200, me.text
    assert me.json()["user_id"] == user_id
    saved = await client.post("/save-document", json={"title": "Herons", "content": TEXT}, headers=bearer(key))
    assert saved.status_code == 201, saved.text
    # The owner's session JWT sees what the key saved, and the key sees the same list.
    by_jwt = (await client.get("/documents", headers=auth_headers(user_id))).json()
    by_key = (await client.get("/documents", headers=bearer(key))).json()
    assert [d["id"] for d in by_key["documents"]] == [d["id"] for d in by_jwt["documents"]] == [
        saved.json()["document_id"]]
    hits = await client.post("/search", json={"query": "how do herons catch fish"}, headers=bearer(key))
    assert hits.status_code == 200
    assert hits.json()["results"][0]["document_id"] == saved.json()["document_id"]


async def test_a_read_key_reads_but_is_refused_writing_and_nothing_changes(client: Any, issuer: Any,
                                                                           user_id: str) -> None:
    key = issuer.add_api_key(user_id, "read")
    refused = await client.post("/save-document", json={"title": "Herons", "content": TEXT}, headers=bearer(key))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "insufficient_scope"
    listed = await client.get("/documents", headers=bearer(key))
    assert listed.status_code == 200 and listed.json()["total"] == 0


async def test_another_users_key_never_sees_the_documents(client: Any, issuer: Any, auth_headers: Any,
                                                          user_id: str) -> None:
    saved = await client.post("/save-document", json={"title": "Herons", "content": TEXT},
                              headers=auth_headers(user_id))
    assert saved.status_code == 201
    other = issuer.add_api_key(f"{user_id}-other", "write")
    assert (await client.get("/documents", headers=bearer(other))).json()["total"] == 0
    assert (await client.get(f"/documents/{saved.json()['document_id']}", headers=bearer(other))).status_code == 404
    hits = await client.post("/search", json={"query": "herons spear fish"}, headers=bearer(other))
    assert hits.json()["results"] == []


@pytest.mark.parametrize(("credential", "code"), [
    ("rag_" + "0" * 64, "invalid_api_key"),                 # well formed, unknown
    ("rag_", "invalid_api_key"),                            # prefix only
    ("rag_" + "a" * 300, "invalid_api_key"),                # longer than any key
    ("rag_abc\x7fdef", "invalid_api_key"),                  # not printable
    ("rag_" + "k" * 100_000, "invalid_api_key"),            # a huge header
    ("eyJhbGciOiJFZERTQSJ9.e30.c2ln", "unauthorized"),      # a forged JWT
    ("x" * 100_000, "unauthorized"),                        # a huge non-key
    ("not-a-token", "unauthorized"),
])
async def test_wrong_malformed_and_huge_credentials_are_401(client: Any, credential: str, code: str) -> None:
    response = await client.get("/documents", headers=bearer(credential))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert credential not in response.text


async def test_only_well_formed_keys_reach_the_auth_service(verifier: Any, issuer: Any) -> None:
    keys, _ = verifier
    before = len(issuer.exchanges)
    for junk in ("rag_" + "a" * 300, "rag_abc\x7f", "rag_\u00e9t\u00e9", "rag_" + "k" * 100_000):
        with pytest.raises(Unauthorized):
            await keys.verify(junk)
    assert len(issuer.exchanges) == before


async def test_a_revoked_key_is_refused_once_the_cache_window_has_passed(verifier: Any, issuer: Any) -> None:
    keys, clock = verifier
    key = issuer.add_api_key("user-revoked", "write")
    assert (await keys.verify(key))["sub"] == "user-revoked"
    issuer.revoke_api_key(key)
    clock.now += 9.9  # within API_KEY_CACHE_SECONDS (10): the remembered answer stands
    assert (await keys.verify(key))["sub"] == "user-revoked"
    assert issuer.exchanges_of(key) == 1
    clock.now += 0.1  # the window is over: asked again, refused
    with pytest.raises(Unauthorized) as refused:
        await keys.verify(key)
    assert refused.value.code == "invalid_api_key"
    assert issuer.exchanges_of(key) == 2


async def test_a_wrong_key_costs_one_exchange_per_window(verifier: Any, issuer: Any) -> None:
    keys, clock = verifier
    wrong = "rag_" + "f" * 64
    for _ in range(5):
        with pytest.raises(Unauthorized):
            await keys.verify(wrong)
    assert issuer.exchanges_of(wrong) == 1
    clock.now += 10
    with pytest.raises(Unauthorized):
        await keys.verify(wrong)
    assert issuer.exchanges_of(wrong) == 2


async def test_concurrent_requests_with_one_key_share_one_exchange(verifier: Any, issuer: Any) -> None:
    keys, _ = verifier
    key = issuer.add_api_key("user-concurrent", "read")
    claims = await asyncio.gather(*(keys.verify(key) for _ in range(20)))
    assert {c["sub"] for c in claims} == {"user-concurrent"}
    assert {c["scope"] for c in claims} == {"read"}
    assert issuer.exchanges_of(key) == 1


async def test_the_callers_address_is_forwarded_for_the_auth_services_limits(verifier: Any, issuer: Any) -> None:
    keys, _ = verifier
    key = issuer.add_api_key("user-ip", "read")
    await keys.verify(key, client_ip="203.0.113.7")
    exchange = [h for h in issuer.exchanges if h.get("x-api-key") == key][-1]
    assert exchange["x-forwarded-for"] == "203.0.113.7"


async def test_the_keys_own_rate_limit_is_a_429_with_retry_after_and_is_not_cached(verifier: Any,
                                                                                    issuer: Any) -> None:
    keys, _ = verifier
    key = issuer.add_api_key("user-limited", "read")
    issuer.exchange_status = 429
    try:
        with pytest.raises(RateLimited) as limited:
            await keys.verify(key)
        assert limited.value.headers["Retry-After"] == "7"
    finally:
        issuer.exchange_status = None
    assert (await keys.verify(key))["sub"] == "user-limited"


async def test_an_auth_service_failure_is_a_503_and_never_accepts_a_lapsed_key(make_settings: Any,
                                                                               isolated_issuer: Any) -> None:
    from fixtures_apps import settings_for

    settings = settings_for(isolated_issuer, make_settings().data_dir, api_key_cache_seconds=10)
    clock = Clock()
    tokens = AccessTokenVerifier(settings)
    keys = ApiKeyVerifier(settings, tokens, clock=clock)
    try:
        key = isolated_issuer.add_api_key("user-down", "write")
        await keys.verify(key)
        isolated_issuer.exchange_status = 500
        clock.now += 10
        with pytest.raises(ServiceUnavailable):
            await keys.verify(key)
        isolated_issuer.exchange_status = None
        isolated_issuer.stop()
        with pytest.raises(ServiceUnavailable) as down:
            await keys.verify(key)
        assert down.value.code == "auth_unavailable"
    finally:
        await keys.aclose()
        await tokens.aclose()


async def test_the_key_never_reaches_the_logs(client: Any, issuer: Any, user_id: str,
                                              caplog: pytest.LogCaptureFixture) -> None:
    key = issuer.add_api_key(user_id, "write")
    wrong = "rag_" + "e" * 64
    with caplog.at_level(logging.DEBUG):
        await client.post("/save-document", json={"title": "Herons", "content": TEXT}, headers=bearer(key))
        await client.get("/documents", headers=bearer(wrong))
        issuer.exchange_status = 500
        try:
            await client.get("/documents", headers=bearer("rag_" + "d" * 64))
        finally:
            issuer.exchange_status = None
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert key not in logged and key[4:20] not in logged
    assert wrong not in logged


async def test_a_keys_token_gone_stale_is_exchanged_again_not_refused(key_settings: Any, issuer: Any) -> None:
    """A membership change makes the cached JWT of a key with organizations stale; the key
    itself is still good, so the next request exchanges it again (its new JWT has the owner's
    memberships of now) instead of failing with token_stale until the cache entry lapses."""
    owner = f"user-{uuid.uuid4().hex[:8]}"
    orgs = [{"id": "org-1", "role": "member"}]
    key = issuer.add_api_key(owner, "read", orgs=orgs)
    tokens = AccessTokenVerifier(key_settings)
    keys = ApiKeyVerifier(key_settings, tokens)
    changes = MembershipChanges()
    bearer_auth = BearerAuthenticator(tokens, keys, changes)
    try:
        first = await bearer_auth.authenticate(key)
        assert "org-1" in first.orgs and issuer.exchanges_of(key) == 1
        changed = issuer.emit("member.removed", user_id=owner, organization_id="org-2", at=first.claims["iat"] + 0.5)
        changes.member_changed(owner, changed["occurred_at"])
        stale_jwt = issuer.mint(owner, orgs=orgs, iat=first.claims["iat"])
        with pytest.raises(Unauthorized) as stale:
            await bearer_auth.authenticate(stale_jwt)
        assert stale.value.code == "token_stale"
        again = await bearer_auth.authenticate(key)
        assert again.claims["iat"] > first.claims["iat"]
        assert issuer.exchanges_of(key) == 2
    finally:
        await keys.aclose()
        await tokens.aclose()
