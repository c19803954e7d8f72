"""GeminiGenerator against a Gemini API mocked at the HTTP layer (respx)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy
from rag_service.errors import ProviderUnavailable
from rag_service.providers.base import NOT_FOUND_ANSWER, Source, Turn
from rag_service.providers.gemini_generator import GeminiGenerator

STREAM_URL = r"^https://generativelanguage\.googleapis\.com/v1\w*/models/gemini-2\.5-flash:streamGenerateContent\?alt=sse$"
TINY_BACKOFF = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005)
SOURCES = [Source(1, "Refunds", "Refunds take 30 days."), Source(2, "Shipping", "Shipping is free.")]


def sse_response(*texts: str, finish: str = "STOP") -> httpx.Response:
    events = []
    for i, text in enumerate(texts):
        candidate = {"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}
        if i == len(texts) - 1:
            candidate["finishReason"] = finish
        events.append(f"data: {json.dumps({'candidates': [candidate]})}\r\n\r\n")
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(events).encode())


def api_error(status: int, message: str = "boom") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": status, "message": message, "status": "X"}})


def make_generator(tmp_path) -> GeminiGenerator:
    settings = Settings(data_dir=tmp_path, gemini_api_key="test-key", llm_timeout_seconds=2.0)
    return GeminiGenerator(settings, retry_policy=TINY_BACKOFF)


async def collect(generator, query="How long do refunds take?", sources=SOURCES, history=()) -> list[str]:
    return [p async for p in generator.stream(query, list(sources), list(history))]


@pytest.fixture
def gemini_api():
    with respx.mock(assert_all_called=False) as router:
        yield router.post(url__regex=STREAM_URL)


async def test_answer_and_request_shape(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("Refunds take 30 days [1]."))
    history = [Turn("user", "Hi"), Turn("assistant", "Hello, ask me anything.")]
    pieces = await collect(make_generator(tmp_path), history=history)

    assert "".join(pieces) == "Refunds take 30 days [1]."
    request = gemini_api.calls.last.request
    assert request.headers["x-goog-api-key"] == "test-key"
    body = json.loads(request.content)
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    question = body["contents"][-1]["parts"][0]["text"]
    assert '<source number="1" title="Refunds">\nRefunds take 30 days.\n</source>' in question
    assert '<source number="2" title="Shipping">' in question
    assert question.endswith("Question: How long do refunds take?")
    assert "cite" in body["systemInstruction"]["parts"][0]["text"].lower()
    assert body["generationConfig"]["temperature"] == pytest.approx(0.2)


async def test_streamed_chunks_arrive_as_separate_pieces(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("Refunds ", "take 30 ", "days [1]."))
    pieces = await collect(make_generator(tmp_path))
    assert len(pieces) >= 3
    assert "".join(pieces) == "Refunds take 30 days [1]."


async def test_citations_outside_the_sources_are_removed(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("Refunds take 30 days [1][", "7]. Shipping is free [2, 9]", " and fast [3]."))
    pieces = await collect(make_generator(tmp_path))
    assert "".join(pieces) == "Refunds take 30 days [1]. Shipping is free [2] and fast."


async def test_rate_limited_then_recovers(tmp_path, gemini_api):
    gemini_api.mock(side_effect=[api_error(429, "quota"), sse_response("Refunds take 30 days [1].")])
    pieces = await collect(make_generator(tmp_path))
    assert "".join(pieces) == "Refunds take 30 days [1]."
    assert gemini_api.call_count == 2


async def test_persistent_failure_is_provider_unavailable(tmp_path, gemini_api):
    gemini_api.mock(return_value=api_error(503, "overloaded"))
    with pytest.raises(ProviderUnavailable) as raised:
        await collect(make_generator(tmp_path))
    assert raised.value.status_code == 503 and "503" in raised.value.message
    assert gemini_api.call_count == 1 + TINY_BACKOFF.max_retries


async def test_timeout_is_retried_then_provider_unavailable(tmp_path, gemini_api):
    gemini_api.mock(side_effect=httpx.ReadTimeout("slow"))
    with pytest.raises(ProviderUnavailable, match="timed out"):
        await collect(make_generator(tmp_path))
    assert gemini_api.call_count == 1 + TINY_BACKOFF.max_retries


async def test_bad_request_is_not_retried(tmp_path, gemini_api):
    gemini_api.mock(return_value=api_error(400, "API key not valid"))
    with pytest.raises(ProviderUnavailable, match="API key not valid"):
        await collect(make_generator(tmp_path))
    assert gemini_api.call_count == 1


async def test_empty_answer_is_provider_unavailable(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("", finish="SAFETY"))
    with pytest.raises(ProviderUnavailable, match="no answer"):
        await collect(make_generator(tmp_path))


async def test_failure_after_pieces_were_shown_is_not_retried(tmp_path, gemini_api):
    class BreaksMidStream(httpx.AsyncByteStream):
        async def __aiter__(self):
            candidate = {"content": {"role": "model", "parts": [{"text": "Refunds take "}]}}
            yield f"data: {json.dumps({'candidates': [candidate]})}\r\n\r\n".encode()
            raise httpx.ReadError("connection reset")

    gemini_api.mock(return_value=httpx.Response(200, headers={"content-type": "text/event-stream"},
                                                stream=BreaksMidStream()))
    shown = []
    with pytest.raises(ProviderUnavailable, match="interrupted"):
        async for piece in make_generator(tmp_path).stream("q", SOURCES, []):
            shown.append(piece)
    assert shown == ["Refunds take"]
    assert gemini_api.call_count == 1


def test_requires_an_api_key(tmp_path):
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        GeminiGenerator(Settings(data_dir=tmp_path, gemini_api_key=None))


async def test_the_prompt_asks_for_the_exact_not_found_reply(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("Refunds take 30 days [1]."))
    await collect(make_generator(tmp_path))
    instruction = json.loads(gemini_api.calls.last.request.content)["systemInstruction"]["parts"][0]["text"]
    assert NOT_FOUND_ANSWER in instruction and "nothing else" in instruction


@pytest.mark.parametrize("pieces", [
    (NOT_FOUND_ANSWER,),
    ("I could", "n't find anything about that in your documents", "."),
    ("**I could not find** this in the provided sources", " [7]."),  # [7] does not exist: dropped first
    ("The sources do not mention Kubernetes.",),
])
async def test_a_not_found_reply_becomes_the_not_found_answer(tmp_path, gemini_api, pieces):
    gemini_api.mock(return_value=sse_response(*pieces))
    assert await collect(make_generator(tmp_path), query="How do I list pods with kubectl?") == [NOT_FOUND_ANSWER]


async def test_a_reply_that_opens_like_not_found_but_cites_a_source_is_an_answer(tmp_path, gemini_api):
    gemini_api.mock(return_value=sse_response("I could not find the exact fee, ", "but refunds take 30 days [1]."))
    pieces = await collect(make_generator(tmp_path))
    assert "".join(pieces) == "I could not find the exact fee, but refunds take 30 days [1]."


async def test_no_sources_is_not_found_without_calling_the_model(tmp_path, gemini_api):
    assert await collect(make_generator(tmp_path), sources=[]) == [NOT_FOUND_ANSWER]
    assert not gemini_api.called
