"""Provider failures injected for real: a Gemini embedding API and an OpenAI-compatible
server that fail or time out (respx), and an answer server refusing connections for real.

Every failure must be a 503 with the JSON error shape, bounded retries, nothing
half-written (no `ready` row without vectors, no orphan vectors) and a service that
recovers when the provider comes back.
"""

from __future__ import annotations

import dataclasses
import json
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import respx

from chat_support import BREAD, parse_sse
from faults_support import CLOSED_PORT, assert_error_shape, new_user
from rag_service.config import Settings
from rag_service.providers.gemini_embedder import GeminiEmbedder
from rag_service.providers.openai_generator import OpenAIGenerator
from rag_service.core.retry import RetryPolicy
from rag_service.storage.access import Access, access_filter
from rag_service.storage.factory import build_vector_store

GEMINI_EMBED_URL = r"^https://generativelanguage\.googleapis\.com/v1\w*/models/gemini-embedding-001:batchEmbedContents$"
LLM_BASE_URL = "http://llm.test/v1"
GEMINI_DIM = 8
RETRIES = 2  # bounded: 1 attempt + RETRIES retries
FAST_RETRIES = RetryPolicy(max_retries=RETRIES, base_delay=0.001, max_delay=0.005)


def failing(route: Any, failure: httpx.Response | Exception) -> Any:
    """Make a respx route answer with `failure` (a response, or an exception it raises)."""
    if isinstance(failure, Exception):
        return route.mock(side_effect=failure)
    return route.mock(return_value=failure)


@asynccontextmanager
async def jwks_passthrough():
    """respx for the providers; the JWKS issuer on 127.0.0.1 stays real."""
    with respx.mock(assert_all_called=False) as mocked:
        mocked.route(host="127.0.0.1").pass_through()
        yield mocked


# --- Gemini embeddings failing ---------------------------------------------------------------


def gemini_vectors(request: httpx.Request) -> httpx.Response:
    texts = json.loads(request.content)["requests"]
    return httpx.Response(200, json={"embeddings": [
        {"values": [float(len(r["content"]["parts"][0]["text"]) % 7 + 1), float(i + 1)] + [0.5] * (GEMINI_DIM - 2)}
        for i, r in enumerate(texts)]})


@pytest.fixture
async def gemini_app(app_factory, make_settings, runtime, tmp_path):
    """The app with Gemini embeddings (mocked over HTTP) and its own 8-d Qdrant Edge store.
    Small chunks, so a modest document spans several embedding requests and ingest batches."""
    settings = make_settings(chunk_size_tokens=24, chunk_overlap_tokens=0)
    gemini_settings = Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="test-key",
                               gemini_embedding_dimension=GEMINI_DIM, gemini_timeout_seconds=2.0)
    embedder = GeminiEmbedder(gemini_settings, retry_policy=FAST_RETRIES)
    store = build_vector_store(settings, model_name=embedder.model_name, dimension=GEMINI_DIM)
    await store.ensure_collection()
    gemini_runtime = dataclasses.replace(runtime, settings=settings, embedder=embedder, vector_store=store)
    try:
        async with app_factory(settings, runtime=gemini_runtime) as (_, client):
            yield client, store
    finally:
        await embedder.aclose()
        await store.close()


@pytest.mark.parametrize("failure", ["http_503", "timeout", "connection_refused"])
async def test_embedder_failure_is_503_after_bounded_retries_and_writes_nothing(gemini_app, auth_headers, failure):
    client, store = gemini_app
    user = new_user()
    headers = auth_headers(user)
    fail = {
        "http_503": httpx.Response(503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}}),
        "timeout": httpx.ReadTimeout("read timed out"),
        "connection_refused": httpx.ConnectError("connection refused"),
    }[failure]

    async with jwks_passthrough() as mocked:
        embed = failing(mocked.post(url__regex=GEMINI_EMBED_URL), fail)
        save = await client.post("/save-document", json={"title": "Bread", "content": BREAD}, headers=headers)
        saves = embed.call_count
        search = await client.post("/search", json={"query": "bread"}, headers=headers)
        searches = embed.call_count - saves

    assert "gemini" in assert_error_shape(save, 503, "provider_unavailable")["message"].lower()
    assert_error_shape(search, 503, "provider_unavailable")
    assert saves == searches == 1 + RETRIES
    listing = (await client.get("/documents", headers=headers)).json()
    assert [(d["status"], d["chunk_count"]) for d in listing["documents"]] == [("failed", 0)]
    assert listing["documents"][0]["error"]
    assert await store.count(access_filter(Access(user))) == 0

    # The provider recovers: saving the same content again is the retry, and it completes.
    async with jwks_passthrough() as mocked:
        mocked.post(url__regex=GEMINI_EMBED_URL).mock(side_effect=gemini_vectors)
        retry = await client.post("/save-document", json={"title": "Bread", "content": BREAD}, headers=headers)
        found = await client.post("/search", json={"query": "yeast", "mode": "keyword"}, headers=headers)
    assert retry.status_code == 201, retry.text
    assert retry.json()["document_id"] == listing["documents"][0]["id"]
    document = (await client.get(f"/documents/{retry.json()['document_id']}", headers=headers)).json()
    assert document["status"] == "ready" and document["chunk_count"] > 0
    assert await store.count(access_filter(Access(user))) == document["chunk_count"]
    assert found.status_code == 200 and found.json()["results"]


async def test_embedder_failing_mid_document_removes_the_vectors_already_written(gemini_app, auth_headers):
    client, store = gemini_app
    user = new_user()
    headers = auth_headers(user)
    # ~600 small chunks: the first ingest batch (256 chunks) is embedded and upserted
    # before the failure, so there really are partial vectors to clean up.
    content = "\n\n".join(f"Paragraph {i} explains how sourdough number {i} rises overnight in the cellar."
                          for i in range(600))
    requests_seen = 0
    upserted: list[int] = []
    real_upsert = store.upsert

    async def counting_upsert(points: list) -> None:
        upserted.append(len(points))
        await real_upsert(points)

    def first_batch_then_fail(request: httpx.Request) -> httpx.Response:
        nonlocal requests_seen
        requests_seen += 1
        if requests_seen <= 3:  # 256 texts = 3 requests of at most 100
            return gemini_vectors(request)
        return httpx.Response(500, json={"error": {"code": 500, "message": "internal", "status": "INTERNAL"}})

    store.upsert = counting_upsert  # instance attribute: observes the writes, changes nothing
    try:
        async with jwks_passthrough() as mocked:
            mocked.post(url__regex=GEMINI_EMBED_URL).mock(side_effect=first_batch_then_fail)
            save = await client.post("/save-document", json={"title": "Sourdough", "content": content},
                                     headers=headers)
    finally:
        del store.upsert

    assert_error_shape(save, 503, "provider_unavailable")
    assert requests_seen == 3 + 1 + RETRIES
    listing = (await client.get("/documents", headers=headers)).json()
    assert [(d["status"], d["chunk_count"]) for d in listing["documents"]] == [("failed", 0)]
    assert upserted == [256], "the first batch was written before the failure"
    assert await store.count(access_filter(Access(user))) == 0


# --- OpenAI-compatible answer server failing -------------------------------------------------


@asynccontextmanager
async def openai_app(app_factory, runtime, base_url: str):
    llm_settings = Settings(_env_file=None, data_dir=runtime.settings.data_dir, llm_provider="openai",
                            openai_base_url=base_url, openai_model="test-model", llm_timeout_seconds=2.0)
    generator = OpenAIGenerator(llm_settings, retry_policy=FAST_RETRIES)
    try:
        async with app_factory(runtime.settings, runtime=dataclasses.replace(runtime, generator=generator)) as pair:
            yield pair[1]
    finally:
        await generator.aclose()


async def _assert_question_saved_answer_failed(client: Any, headers: dict, question: str, count: int) -> None:
    history = (await client.get("/history", headers=headers)).json()
    assert history["total"] == count
    for conversation in history["history"]:
        detail = (await client.get(f"/history/{conversation['conversation_id']}", headers=headers)).json()
        assert [(m["role"], m["content"], m["status"]) for m in detail["messages"]] == [
            ("user", question, "complete"), ("assistant", "", "failed")]


@pytest.mark.parametrize("failure", ["http_503", "timeout", "malformed"])
async def test_llm_failure_is_503_with_the_question_saved(app_factory, runtime, auth_headers, failure):
    headers = auth_headers(new_user())
    question = "Why does bread rise?"
    fail = {
        "http_503": httpx.Response(503, json={"error": {"message": "model is loading"}}),
        "timeout": httpx.ReadTimeout("read timed out"),
        "malformed": httpx.Response(200, text="data: {not json\n\n", headers={"Content-Type": "text/event-stream"}),
    }[failure]
    async with openai_app(app_factory, runtime, LLM_BASE_URL) as client:
        save = await client.post("/save-document", json={"title": "Baking", "content": BREAD}, headers=headers)
        assert save.status_code == 201, save.text
        async with jwks_passthrough() as mocked:
            llm = failing(mocked.post(f"{LLM_BASE_URL}/chat/completions"), fail)
            response = await client.post("/chat", json={"query": question}, headers=headers)
            json_calls = llm.call_count
            stream = await client.post("/chat", json={"query": question, "stream": True}, headers=headers)

        error = assert_error_shape(response, 503, "provider_unavailable")
        assert "openai" in error["message"].lower()
        # Malformed answers are not retried (the server answered, wrongly); the rest are, boundedly.
        assert json_calls == (1 if failure == "malformed" else 1 + RETRIES)
        assert stream.status_code == 200  # the stream had started: the failure is its last event
        events = parse_sse(stream.text)
        assert [name for name, _ in events] == ["sources", "error"]
        assert events[-1][1]["error"]["code"] == "provider_unavailable"
        await _assert_question_saved_answer_failed(client, headers, question, count=2)


async def test_llm_server_down_for_real_is_503_with_the_question_saved(app_factory, runtime, auth_headers):
    headers = auth_headers(new_user())
    async with openai_app(app_factory, runtime, f"http://127.0.0.1:{CLOSED_PORT}/v1") as client:
        await client.post("/save-document", json={"title": "Baking", "content": BREAD}, headers=headers)
        response = await client.post("/chat", json={"query": "Why does bread rise?"}, headers=headers)
        error = assert_error_shape(response, 503, "provider_unavailable")
        assert "cannot reach" in error["message"] and f"{1 + RETRIES} attempts" in error["message"]
        await _assert_question_saved_answer_failed(client, headers, "Why does bread rise?", count=1)
