"""Dependency failures injected for real: a Qdrant server and a PostgreSQL server on closed
ports, and a JWKS endpoint that goes down. Failing embedding and answer providers are in
test_provider_faults.py.

Every failure must be a 503 with the JSON error shape, nothing half-written (no `ready` row
without vectors, no orphan vectors) and a service that recovers when the dependency comes back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import httpx
import pytest

from chat_support import BREAD
from faults_support import CLOSED_PORT, assert_error_shape, new_user
from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.storage.db import create_engine_and_sessionmaker
from rag_service.storage.factory import build_vector_store


# --- Qdrant server unreachable ---------------------------------------------------------------


@pytest.fixture
async def qdrant_down(app_factory, make_settings, runtime):
    settings = make_settings(qdrant_url=f"http://127.0.0.1:{CLOSED_PORT}")
    unreachable = build_vector_store(settings, model_name=runtime.embedder.model_name,
                                     dimension=runtime.embedder.dimension)
    broken = dataclasses.replace(runtime, settings=settings, vector_store=unreachable)
    try:
        async with app_factory(settings, runtime=broken) as (_, client):
            yield client
    finally:
        await unreachable.close()


async def test_qdrant_unreachable_is_503_on_vector_routes_and_health(qdrant_down, auth_headers):
    client, headers = qdrant_down, auth_headers(new_user())

    assert_error_shape(await client.post("/search", json={"query": "bread"}, headers=headers),
                       503, "service_unavailable")
    save = await client.post("/save-document", json={"title": "Bread", "content": BREAD}, headers=headers)
    assert_error_shape(save, 503)
    chat = await client.post("/chat", json={"query": "Why does bread rise?"}, headers=headers)
    assert_error_shape(chat, 503, "service_unavailable")
    stream = await client.post("/chat", json={"query": "Why does bread rise?", "stream": True}, headers=headers)
    assert_error_shape(stream, 503)  # retrieval fails before the stream starts: plain JSON

    # The database still works: the failed document is listed as failed, never ready.
    listing = (await client.get("/documents", headers=headers)).json()
    assert [(d["status"], d["chunk_count"]) for d in listing["documents"]] == [("failed", 0)]
    # Deleting needs the vector store too: refused, and the row stays for a retry.
    doc_id = listing["documents"][0]["id"]
    assert_error_shape(await client.delete(f"/documents/{doc_id}", headers=headers), 503)
    assert (await client.get(f"/documents/{doc_id}", headers=headers)).status_code == 200
    # Each refused chat kept the question, with the answer marked failed.
    history = (await client.get("/history", headers=headers)).json()
    assert history["total"] == 2
    for conversation in history["history"]:
        detail = (await client.get(f"/history/{conversation['conversation_id']}", headers=headers)).json()
        assert [(m["role"], m["status"]) for m in detail["messages"]] == [("user", "complete"),
                                                                          ("assistant", "failed")]

    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert health.json()["services"]["qdrant"] is False and health.json()["services"]["database"] is True


# --- database unreachable --------------------------------------------------------------------


@pytest.fixture
async def database_down(app_factory, make_settings, runtime):
    settings = make_settings(database_url=f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/nothing")
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    broken = dataclasses.replace(runtime, settings=settings, engine=engine, sessionmaker=sessionmaker)
    try:
        async with app_factory(settings, runtime=broken) as (_, client):
            yield client
    finally:
        await engine.dispose()


async def test_database_unreachable_is_503_on_every_database_route_and_health(database_down, auth_headers):
    client, headers = database_down, auth_headers(new_user())
    some_id = str(uuid.uuid4())
    requests = [
        ("get", "/documents", {}),
        ("get", f"/documents/{some_id}", {}),
        ("delete", f"/documents/{some_id}", {}),
        ("post", "/save-document", {"json": {"title": "Bread", "content": BREAD}}),
        ("post", "/documents/upload", {"files": {"files": ("bread.txt", BREAD.encode())}}),
        ("post", "/chat", {"json": {"query": "Why does bread rise?"}}),
        ("post", "/chat", {"json": {"query": "Why does bread rise?", "stream": True}}),
        ("get", "/history", {}),
        ("get", f"/history/{some_id}", {}),
        ("delete", f"/history/{some_id}", {}),
    ]
    for method, path, kwargs in requests:
        response = await getattr(client, method)(path, headers=headers, **kwargs)
        error = assert_error_shape(response, 503, "service_unavailable")
        assert "127.0.0.1" not in error["message"] and "postgres" not in error["message"].lower(), error

    # Search reads only the vector store and the embedder: it keeps answering.
    search = await client.post("/search", json={"query": "bread"}, headers=headers)
    assert search.status_code == 200 and search.json()["results"] == []

    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json()["services"]["database"] is False and health.json()["services"]["qdrant"] is True


# --- JWKS endpoint down ----------------------------------------------------------------------
# Unit-level: test_auth_tokens.py::test_jwks_down_with_warm_cache_keeps_known_kids_only and
# ::test_jwks_unreachable_on_cold_cache_is_503_then_recovers. Here: the same over HTTP.


async def test_jwks_down_keeps_cached_keys_working_over_http(app_factory, make_settings, runtime, isolated_issuer):
    settings = make_settings(auth_jwks_url=isolated_issuer.jwks_url, auth_issuer=isolated_issuer.issuer,
                             auth_audience=isolated_issuer.audience, jwks_refetch_min_interval=0.0)
    verifier = AccessTokenVerifier(settings)
    own = dataclasses.replace(runtime, settings=settings, token_verifier=verifier)
    user = new_user()
    try:
        async with app_factory(settings, runtime=own) as (_, client):
            token = isolated_issuer.mint(user)
            assert (await client.get("/me", headers={"Authorization": f"Bearer {token}"})).status_code == 200
            isolated_issuer.stop()
            # Known key, issuer down: still accepted (an auth-service restart logs nobody out).
            again = await client.get("/documents", headers={"Authorization": f"Bearer {isolated_issuer.mint(user)}"})
            assert again.status_code == 200, again.text
            # A key the service never saw cannot be checked while the JWKS is down: refused.
            unknown = isolated_issuer.rotate()
            forged = isolated_issuer.mint(user, key=unknown)
            assert_error_shape(await client.get("/documents", headers={"Authorization": f"Bearer {forged}"}), 401)
    finally:
        await verifier.aclose()


async def test_requests_on_a_cold_cache_wait_for_a_slow_jwks_fetch(app_factory, make_settings, runtime,
                                                                   isolated_issuer):
    """A burst of first requests while the JWKS fetch is in flight (auth-service slow at
    start-up): every request waits for that one fetch instead of failing with 503."""
    fetches = 0

    async def slow_jwks(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        await asyncio.sleep(0.5)
        return httpx.Response(200, json=isolated_issuer.jwks())

    settings = make_settings(auth_jwks_url=isolated_issuer.jwks_url, auth_issuer=isolated_issuer.issuer,
                             auth_audience=isolated_issuer.audience)
    verifier = AccessTokenVerifier(settings, http_client=httpx.AsyncClient(transport=httpx.MockTransport(slow_jwks)))
    own = dataclasses.replace(runtime, settings=settings, token_verifier=verifier)
    users = [new_user() for _ in range(6)]
    async with app_factory(settings, runtime=own) as (_, client):
        responses = await asyncio.gather(*(
            client.get("/me", headers={"Authorization": f"Bearer {isolated_issuer.mint(user)}"}) for user in users))
    assert [(r.status_code, r.json().get("user_id")) for r in responses] == [(200, user) for user in users]
    assert fetches == 1
