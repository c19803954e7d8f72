"""GeminiEmbedder against a Gemini API mocked at the HTTP layer (respx)."""

from __future__ import annotations

import json
import math

import httpx
import pytest
import respx
from prometheus_client import REGISTRY

from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy
from rag_service.errors import ProviderUnavailable
from rag_service.providers.gemini_embedder import GeminiEmbedder

# The SDK posts every embed_content call to batchEmbedContents (API version in the path).
EMBED_URL = r"^https://generativelanguage\.googleapis\.com/v1\w*/models/gemini-embedding-001:batchEmbedContents$"
DIM = 8
TINY_BACKOFF = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005)


def make_embedder(tmp_path, **overrides) -> GeminiEmbedder:
    settings = Settings(
        data_dir=tmp_path, gemini_api_key="test-key", gemini_embedding_dimension=DIM,
        gemini_timeout_seconds=2.0, **overrides,
    )
    return GeminiEmbedder(settings, retry_policy=TINY_BACKOFF)


def embeddings_response(request: httpx.Request) -> httpx.Response:
    """Echo one vector per requested text; the vector encodes the text's length and position."""
    body = json.loads(request.content)
    vectors = [
        {"values": [float(len(r["content"]["parts"][0]["text"])), float(i + 1)] + [0.5] * (DIM - 2)}
        for i, r in enumerate(body["requests"])
    ]
    return httpx.Response(200, json={"embeddings": vectors})


def api_error(status: int, message: str = "boom") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": message, "status": "X"}})


@pytest.fixture
def gemini_api():
    with respx.mock(assert_all_called=False) as router:
        yield router.post(url__regex=EMBED_URL)


async def test_success_sends_task_type_dimension_and_key(tmp_path, gemini_api):
    gemini_api.mock(side_effect=embeddings_response)
    embedder = make_embedder(tmp_path)
    vectors = await embedder.embed(["hello", "hi"], task="query")

    assert len(vectors) == 2 and all(len(v) == DIM for v in vectors)
    for v in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-9)
    request = gemini_api.calls.last.request
    assert request.headers["x-goog-api-key"] == "test-key"
    body = json.loads(request.content)
    assert [r["content"]["parts"][0]["text"] for r in body["requests"]] == ["hello", "hi"]
    assert {r["taskType"] for r in body["requests"]} == {"RETRIEVAL_QUERY"}
    assert {r["outputDimensionality"] for r in body["requests"]} == {DIM}
    assert embedder.model_name == "gemini-embedding-001" and embedder.dimension == DIM


async def test_documents_use_retrieval_document_task(tmp_path, gemini_api):
    gemini_api.mock(side_effect=embeddings_response)
    await make_embedder(tmp_path).embed(["chunk"])
    body = json.loads(gemini_api.calls.last.request.content)
    assert body["requests"][0]["taskType"] == "RETRIEVAL_DOCUMENT"


async def test_vectors_are_l2_normalized(tmp_path, gemini_api):
    raw = [3.0, 4.0] + [0.0] * (DIM - 2)
    gemini_api.mock(return_value=httpx.Response(200, json={"embeddings": [{"values": raw}]}))
    [vector] = await make_embedder(tmp_path).embed(["x"])
    assert vector[:2] == pytest.approx([0.6, 0.8])


async def test_250_texts_are_sent_as_three_ordered_batches(tmp_path, gemini_api):
    gemini_api.mock(side_effect=embeddings_response)
    texts = [f"text number {i}" for i in range(250)]
    counted_before = REGISTRY.get_sample_value("rag_embedded_texts_total", {"provider": "gemini"}) or 0.0
    vectors = await make_embedder(tmp_path).embed(texts)
    assert REGISTRY.get_sample_value("rag_embedded_texts_total", {"provider": "gemini"}) - counted_before == 250

    sizes = [len(json.loads(c.request.content)["requests"]) for c in gemini_api.calls]
    assert sizes == [100, 100, 50]
    sent = [r["content"]["parts"][0]["text"] for c in gemini_api.calls for r in json.loads(c.request.content)["requests"]]
    assert sent == texts
    assert len(vectors) == 250
    # The mock encodes each text's position within its batch: order must survive batching.
    unnormalized_positions = [v[1] / v[2] * 0.5 for v in vectors]
    assert [round(p) for p in unnormalized_positions] == [i % 100 + 1 for i in range(250)]


async def test_empty_input_makes_no_request(tmp_path, gemini_api):
    assert await make_embedder(tmp_path).embed([]) == []
    assert gemini_api.call_count == 0


async def test_rate_limited_then_recovers(tmp_path, gemini_api):
    gemini_api.mock(side_effect=[api_error(429, "quota"), embeddings_response])
    vectors = await make_embedder(tmp_path).embed(["a"])
    assert len(vectors) == 1
    assert gemini_api.call_count == 2


async def test_persistent_503_gives_provider_unavailable_after_bounded_retries(tmp_path, gemini_api):
    gemini_api.mock(return_value=api_error(503, "overloaded"))
    with pytest.raises(ProviderUnavailable) as raised:
        await make_embedder(tmp_path).embed(["a"])
    assert raised.value.status_code == 503
    assert "503" in raised.value.message and "3 attempts" in raised.value.message
    assert gemini_api.call_count == 1 + TINY_BACKOFF.max_retries


async def test_client_error_is_not_retried(tmp_path, gemini_api):
    gemini_api.mock(return_value=api_error(400, "API key not valid"))
    with pytest.raises(ProviderUnavailable, match="API key not valid"):
        await make_embedder(tmp_path).embed(["a"])
    assert gemini_api.call_count == 1


async def test_timeout_is_retried_then_provider_unavailable(tmp_path, gemini_api):
    gemini_api.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await make_embedder(tmp_path).embed(["a"])
    assert gemini_api.call_count == 1 + TINY_BACKOFF.max_retries


async def test_timeout_then_success(tmp_path, gemini_api):
    gemini_api.mock(side_effect=[httpx.ConnectTimeout("slow"), embeddings_response])
    assert len(await make_embedder(tmp_path).embed(["a"])) == 1


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({}, "0 embeddings for 2 texts"),
        ({"embeddings": [{"values": [1.0] * DIM}]}, "1 embeddings for 2 texts"),
        ({"embeddings": [{"values": [1.0] * DIM}, {"values": [1.0] * (DIM - 1)}]}, "dimensions"),
        ({"embeddings": [{"values": [1.0] * DIM}, {}]}, "no values"),
        ({"embeddings": [{"values": [1.0] * DIM}, {"values": [0.0] * DIM}]}, "zero"),
    ],
)
async def test_malformed_response_is_provider_unavailable(tmp_path, gemini_api, payload, reason):
    gemini_api.mock(return_value=httpx.Response(200, json=payload))
    with pytest.raises(ProviderUnavailable, match=reason):
        await make_embedder(tmp_path).embed(["a", "b"])


async def test_non_json_body_is_provider_unavailable(tmp_path, gemini_api):
    gemini_api.mock(return_value=httpx.Response(200, text="<html>proxy error</html>"))
    with pytest.raises(ProviderUnavailable):
        await make_embedder(tmp_path).embed(["a"])


def test_counts_tokens_and_exposes_a_tokenizer(tmp_path):
    embedder = make_embedder(tmp_path)
    assert embedder.count_tokens("hello world") == 2
    assert embedder.hf_tokenizer().encode("hello world", add_special_tokens=False).tokens == ["hello", "world"]
    assert embedder.max_tokens == 2048


def test_requires_an_api_key(tmp_path):
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        GeminiEmbedder(Settings(data_dir=tmp_path, gemini_api_key=None))
