"""OpenAIEmbedder against OpenAI-compatible servers mocked at the HTTP layer (respx).

The response bodies are the shapes the servers really send to POST /v1/embeddings: OpenAI
(and vLLM, which copies it: `object`, `index`, `model`, `usage`), Ollama's OpenAI endpoint,
Text Embeddings Inference's OpenAI route (`/v1/embeddings`), and their error bodies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re

import httpx
import pytest
import respx
from prometheus_client import REGISTRY
from typer.testing import CliRunner

from rag_service.cli import app
from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy
from rag_service.errors import ProviderUnavailable
from rag_service.providers.factory import build_embedder
from rag_service.providers.openai_embedder import OpenAIEmbedder
from rag_service.runtime import build_runtime
from rag_service.search.service import SearchService
from rag_service.storage.access import Access, access_filter
from rag_service.storage.factory import build_vector_store, collection_name

BASE_URL = "http://embeddings.test:8080/v1"
EMBED_URL = BASE_URL + "/embeddings"
DIM = 6
TINY_BACKOFF = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005)


def openai_settings(tmp_path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path, embedding_provider="openai", openai_embedding_base_url=BASE_URL,
                  openai_embedding_model="nomic-embed-text", openai_embedding_dimension=DIM,
                  openai_embedding_timeout_seconds=2.0)
    values.update(overrides)
    return Settings(_env_file=None, **values)


def make_embedder(tmp_path, **overrides) -> OpenAIEmbedder:
    return OpenAIEmbedder(openai_settings(tmp_path, **overrides), retry_policy=TINY_BACKOFF)


def vector_for(text: str) -> list[float]:
    """A raw (not unit-length) vector that encodes the text's length."""
    return [float(len(text)), 1.0] + [0.5] * (DIM - 2)


def openai_body(request: httpx.Request, *, reverse: bool = False) -> dict:
    """OpenAI's (and vLLM's) response; `reverse` sends the items out of order, as `index` allows."""
    body = json.loads(request.content)
    data = [{"object": "embedding", "index": i, "embedding": vector_for(text)} for i, text in enumerate(body["input"])]
    if reverse:
        data.reverse()
    return {"object": "list", "data": data, "model": body["model"],
            "usage": {"prompt_tokens": 7, "total_tokens": 7}}


def ollama_body(request: httpx.Request) -> dict:
    """Ollama's /v1/embeddings: the same list, its model name with a tag."""
    body = json.loads(request.content)
    return {"object": "list", "model": body["model"] + ":latest",
            "data": [{"object": "embedding", "embedding": vector_for(t), "index": i} for i, t in enumerate(body["input"])],
            "usage": {"prompt_tokens": 4, "total_tokens": 4}}


def tei_body(request: httpx.Request) -> dict:
    """Text Embeddings Inference's OpenAI route (already unit-length vectors)."""
    body = json.loads(request.content)
    data = []
    for i, text in enumerate(body["input"]):
        raw = vector_for(text)
        norm = math.sqrt(sum(v * v for v in raw))
        data.append({"object": "embedding", "embedding": [v / norm for v in raw], "index": i})
    return {"object": "list", "data": data, "model": "BAAI/bge-small-en-v1.5",
            "usage": {"prompt_tokens": 3, "total_tokens": 3}}


@pytest.fixture
def server():
    with respx.mock(assert_all_called=False) as router:
        yield router.post(EMBED_URL)


def unit(vector: list[float]) -> bool:
    return math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-9)


@pytest.mark.parametrize("shape", [openai_body, ollama_body, tei_body])
async def test_each_server_shape_gives_unit_vectors_in_input_order(tmp_path, server, shape) -> None:
    server.mock(side_effect=lambda request: httpx.Response(200, json=shape(request)))
    embedder = make_embedder(tmp_path)
    vectors = await embedder.embed(["a", "abcd"], task="document")
    assert len(vectors) == 2 and all(len(v) == DIM and unit(v) for v in vectors)
    # The first component encodes the text's length: order kept, a != abcd.
    assert vectors[0][0] < vectors[1][0]
    await embedder.aclose()


async def test_request_carries_model_inputs_float_format_and_no_key_by_default(tmp_path, server) -> None:
    server.mock(side_effect=lambda request: httpx.Response(200, json=openai_body(request)))
    embedder = make_embedder(tmp_path)
    await embedder.embed(["hello"], task="query")
    request = server.calls.last.request
    assert json.loads(request.content) == {"model": "nomic-embed-text", "input": ["hello"], "encoding_format": "float"}
    assert "authorization" not in request.headers
    await embedder.aclose()


async def test_key_dimensions_and_task_prefixes_when_configured(tmp_path, server) -> None:
    server.mock(side_effect=lambda request: httpx.Response(200, json=openai_body(request)))
    embedder = make_embedder(tmp_path, openai_embedding_api_key="sk-test", openai_embedding_send_dimensions=True,
                             openai_embedding_query_prefix="search_query: ",
                             openai_embedding_document_prefix="search_document: ")
    await embedder.embed(["what is fstab"], task="query")
    query_request = server.calls.last.request
    await embedder.embed(["fstab lists filesystems"], task="document")
    document_request = server.calls.last.request
    assert query_request.headers["authorization"] == "Bearer sk-test"
    assert json.loads(query_request.content)["input"] == ["search_query: what is fstab"]
    assert json.loads(query_request.content)["dimensions"] == DIM
    assert json.loads(document_request.content)["input"] == ["search_document: fstab lists filesystems"]
    await embedder.aclose()


async def test_items_out_of_order_are_put_back_by_index(tmp_path, server) -> None:
    server.mock(side_effect=lambda request: httpx.Response(200, json=openai_body(request, reverse=True)))
    embedder = make_embedder(tmp_path)
    texts = ["x" * n for n in (1, 5, 9)]
    vectors = await embedder.embed(texts)
    expected = [[v / math.sqrt(sum(x * x for x in vector_for(t))) for v in vector_for(t)] for t in texts]
    for got, want in zip(vectors, expected, strict=True):
        assert got == pytest.approx(want)
    await embedder.aclose()


async def test_large_inputs_go_in_batches_in_order(tmp_path, server) -> None:
    server.mock(side_effect=lambda request: httpx.Response(200, json=openai_body(request)))
    embedder = make_embedder(tmp_path, openai_embedding_batch_size=2)
    before = REGISTRY.get_sample_value("rag_embedded_texts_total", {"provider": "openai"}) or 0.0
    texts = ["x" * n for n in range(1, 6)]
    vectors = await embedder.embed(texts)
    assert [len(json.loads(c.request.content)["input"]) for c in server.calls] == [2, 2, 1]
    assert [v[0] for v in vectors] == sorted(v[0] for v in vectors)
    assert REGISTRY.get_sample_value("rag_embedded_texts_total", {"provider": "openai"}) - before == 5
    await embedder.aclose()


async def test_transient_failures_are_retried_then_succeed(tmp_path, server) -> None:
    ok = lambda request: httpx.Response(200, json=openai_body(request))  # noqa: E731
    server.mock(side_effect=[httpx.Response(503, json={"error": "model is loading"}), httpx.ConnectError("refused"), ok])
    embedder = make_embedder(tmp_path)
    [vector] = await embedder.embed(["retry me"])
    assert unit(vector) and server.call_count == 3
    await embedder.aclose()


async def test_rate_limit_exhausts_retries_into_provider_unavailable(tmp_path, server) -> None:
    server.mock(return_value=httpx.Response(
        429, headers={"retry-after": "0"},
        json={"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}}))
    embedder = make_embedder(tmp_path)
    with pytest.raises(ProviderUnavailable, match="HTTP 429: Rate limit reached.*gave up after 3 attempts"):
        await embedder.embed(["x"])
    assert server.call_count == 3
    await embedder.aclose()


@pytest.mark.parametrize(("status", "body", "message"), [
    (401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, "Incorrect API key"),
    (404, {"error": "model \"nomic-embed-text\" not found, try pulling it first"}, "not found, try pulling"),
    (413, {"error": "batch size 64 > maximum allowed batch size 32", "error_type": "Validation"}, "maximum allowed"),
])
async def test_refusals_fail_at_once_with_the_server_message(tmp_path, server, status, body, message) -> None:
    server.mock(return_value=httpx.Response(status, json=body))
    embedder = make_embedder(tmp_path)
    with pytest.raises(ProviderUnavailable, match=message):
        await embedder.embed(["x"])
    assert server.call_count == 1
    await embedder.aclose()


@pytest.mark.parametrize(("body", "message"), [
    ({"object": "list", "data": []}, "0 embeddings for 1 texts"),
    ({"detail": "nope"}, "0 embeddings for 1 texts"),
    ({"data": [{"index": 0, "embedding": [1.0, 2.0]}]}, "vector of 2 dimensions, expected 6"),
    ({"data": [{"index": 0, "embedding": "AAAAAA=="}]}, "base64"),
    ({"data": [{"index": 0, "embedding": [0.0] * DIM}]}, "zero or non-finite"),
    ({"data": [{"index": 3, "embedding": [1.0] * DIM}]}, "indexes"),
])
async def test_malformed_answers_are_provider_failures_not_bad_vectors(tmp_path, server, body, message) -> None:
    server.mock(return_value=httpx.Response(200, json=body))
    embedder = make_embedder(tmp_path)
    with pytest.raises(ProviderUnavailable, match=message):
        await embedder.embed(["x"])
    await embedder.aclose()


def test_factory_builds_it_and_its_space_names_a_new_collection(tmp_path) -> None:
    embedder = build_embedder(openai_settings(tmp_path, openai_embedding_model="BAAI/bge-small-en-v1.5",
                                            openai_embedding_dimension=384))
    assert isinstance(embedder, OpenAIEmbedder)
    assert (embedder.model_name, embedder.dimension) == ("BAAI/bge-small-en-v1.5", 384)
    assert collection_name("chunks", embedder.model_name, embedder.dimension) == "chunks__bge-small-en-v1.5__384"
    assert collection_name("chunks", embedder.model_name, embedder.dimension) != collection_name(
        "chunks", "all-MiniLM-L6-v2", 384)
    # Auto never picks it: a self-hoster asks for it by name.
    assert Settings(_env_file=None, data_dir=tmp_path, gemini_api_key=None).resolved_embedding_provider == "local"


def test_a_dimension_of_zero_is_refused_at_start_up(tmp_path) -> None:
    with pytest.raises(ValueError):
        openai_settings(tmp_path, openai_embedding_dimension=0)


# --- a new embedder is a new vector space, filled by `rag reindex` ----------------------

WORDS_DIM = 64


def bag_of_words(text: str) -> list[float]:
    """A stand-in model: each word hashed into one of WORDS_DIM buckets."""
    vector = [0.0] * WORDS_DIM
    for word in re.findall(r"[a-z]+", text.lower()):
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % WORDS_DIM] += 1.0
    vector[0] += 0.01  # never the zero vector
    return vector


def bag_of_words_server(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    data = [{"object": "embedding", "index": i, "embedding": bag_of_words(t)} for i, t in enumerate(body["input"])]
    return httpx.Response(200, json={"object": "list", "data": data, "model": body["model"],
                                     "usage": {"prompt_tokens": 1, "total_tokens": 1}})


async def vector_count(settings: Settings, model: str, dimension: int, user: str) -> int:
    store = build_vector_store(settings, model, dimension)
    try:
        return await store.count(access_filter(Access(user)))
    finally:
        await store.close()


async def dense_titles(settings: Settings, user: str, query: str) -> list[str]:
    runtime = await build_runtime(settings)
    try:
        search = SearchService(runtime.vector_store, runtime.sparse_encoder, runtime.embedder, settings)
        result = await search.search(Access(user), query, top_k=3, mode="dense")
        return [hit.title for hit in result.hits]
    finally:
        await runtime.aclose()


def test_switching_to_an_openai_embedder_starts_a_new_space_that_reindex_fills(tmp_path, make_settings) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "rivers.txt").write_text("Rivers carry water and silt down to their deltas.")
    (folder / "mountains.txt").write_text("Mountains rise where tectonic plates collide and fold.")
    (folder / "forests.txt").write_text("Forests of pine and spruce cover the northern slopes.")
    local = make_settings()
    ingested = CliRunner().invoke(app, ["ingest", str(folder), "--user-id", "switcher"], obj=local)
    assert ingested.exit_code == 0, ingested.output
    assert asyncio.run(vector_count(local, "all-MiniLM-L6-v2", 384, "switcher")) == 3

    remote = local.model_copy(update=dict(
        embedding_provider="openai", openai_embedding_base_url=BASE_URL,
        openai_embedding_model="BAAI/bge-small-en-v1.5", openai_embedding_dimension=WORDS_DIM))
    with respx.mock(assert_all_called=False) as router:
        server = router.post(EMBED_URL).mock(side_effect=bag_of_words_server)
        # The new model's collection exists empty: nothing mixes with MiniLM's vectors.
        assert asyncio.run(vector_count(remote, "BAAI/bge-small-en-v1.5", WORDS_DIM, "switcher")) == 0
        reindexed = CliRunner().invoke(app, ["reindex"], obj=remote)
        assert reindexed.exit_code == 0, reindexed.output
        assert "chunks__bge-small-en-v1.5__64" in reindexed.output
        assert "re-indexed 3 documents (3 chunks), 0 failed" in reindexed.output
        assert server.call_count >= 1
        assert asyncio.run(vector_count(remote, "BAAI/bge-small-en-v1.5", WORDS_DIM, "switcher")) == 3
        # Searches embed the query with the new model and find the page in the new space.
        assert asyncio.run(dense_titles(remote, "switcher", "where do plates collide"))[0] == "mountains.txt"
    # The old space is left as it was (switching back needs no reindex).
    assert asyncio.run(vector_count(local, "all-MiniLM-L6-v2", 384, "switcher")) == 3
