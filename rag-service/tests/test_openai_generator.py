"""OpenAIGenerator against an OpenAI-compatible server mocked at the HTTP layer (respx)."""

from __future__ import annotations

import json

import httpx
import pytest
import respx

from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy
from rag_service.errors import ProviderUnavailable
from rag_service.providers.base import NOT_FOUND_ANSWER, Source, Turn
from rag_service.providers.openai_generator import OpenAIGenerator

BASE_URL = "http://llm.test:11434/v1"
TINY_BACKOFF = RetryPolicy(max_retries=2, base_delay=0.001, max_delay=0.005)
EVENT_STREAM = {"content-type": "text/event-stream"}
SOURCES = [Source(1, "Refunds", "Refunds take 30 days."), Source(2, "Shipping", "Shipping is free.")]


def sse_response(*texts: str, done: bool = True) -> httpx.Response:
    lines = [": keep-alive\n\n", 'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n']
    for text in texts:
        event = {"id": "c1", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": text}}]}
        lines.append(f"data: {json.dumps(event)}\n\n")
    lines.append('data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    if done:
        lines.append("data: [DONE]\n\n")
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content="".join(lines).encode())


def make_generator(tmp_path, api_key: str | None = "sk-test") -> OpenAIGenerator:
    settings = Settings(data_dir=tmp_path, openai_base_url=BASE_URL + "/", openai_api_key=api_key,
                        openai_model="llama3.2", llm_timeout_seconds=2.0)
    return OpenAIGenerator(settings, retry_policy=TINY_BACKOFF)


async def collect(generator, query="How long do refunds take?", sources=SOURCES, history=()) -> list[str]:
    return [p async for p in generator.stream(query, list(sources), list(history))]


@pytest.fixture
def llm_server():
    with respx.mock(assert_all_called=False) as router:
        yield router.post(f"{BASE_URL}/chat/completions")


async def test_answer_and_request_shape(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Refunds take 30 days [1]."))
    history = [Turn("user", "Hi"), Turn("assistant", "Hello!")]
    pieces = await collect(make_generator(tmp_path), history=history)

    assert "".join(pieces) == "Refunds take 30 days [1]."
    request = llm_server.calls.last.request
    assert request.headers["authorization"] == "Bearer sk-test"
    body = json.loads(request.content)
    assert body["model"] == "llama3.2" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][1:3] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    question = body["messages"][-1]["content"]
    assert '<source number="1" title="Refunds">\nRefunds take 30 days.\n</source>' in question
    assert question.endswith("Question: How long do refunds take?")


async def test_no_api_key_sends_no_authorization_header(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("ok [1]"))
    await collect(make_generator(tmp_path, api_key=None))
    assert "authorization" not in llm_server.calls.last.request.headers


async def test_streamed_chunks_arrive_as_separate_pieces(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Refunds", " take", " 30 days", " [1]."))
    pieces = await collect(make_generator(tmp_path))
    assert len(pieces) >= 3
    assert "".join(pieces) == "Refunds take 30 days [1]."


async def test_stream_without_done_marker_still_completes(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Shipping is free [2].", done=False))
    assert "".join(await collect(make_generator(tmp_path))) == "Shipping is free [2]."


async def test_citations_outside_the_sources_are_removed(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Refunds take 30 days [", "1][4]. Free shipping [0, 2]", " [12]."))
    pieces = await collect(make_generator(tmp_path))
    assert "".join(pieces) == "Refunds take 30 days [1]. Free shipping [2]."


async def test_rate_limited_then_recovers(tmp_path, llm_server):
    llm_server.mock(side_effect=[
        httpx.Response(429, json={"error": {"message": "slow down"}}, headers={"retry-after": "0"}),
        sse_response("Refunds take 30 days [1]."),
    ])
    assert "".join(await collect(make_generator(tmp_path))) == "Refunds take 30 days [1]."
    assert llm_server.call_count == 2


async def test_persistent_failure_is_provider_unavailable(tmp_path, llm_server):
    llm_server.mock(return_value=httpx.Response(502, text="bad gateway"))
    with pytest.raises(ProviderUnavailable) as raised:
        await collect(make_generator(tmp_path))
    assert raised.value.status_code == 503
    assert "HTTP 502" in raised.value.message and "3 attempts" in raised.value.message
    assert llm_server.call_count == 1 + TINY_BACKOFF.max_retries


async def test_connection_refused_is_retried_then_provider_unavailable(tmp_path, llm_server):
    llm_server.mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        await collect(make_generator(tmp_path))
    assert llm_server.call_count == 1 + TINY_BACKOFF.max_retries


async def test_unknown_model_is_not_retried(tmp_path, llm_server):
    llm_server.mock(return_value=httpx.Response(404, json={"error": {"message": "model 'llama3.2' not found"}}))
    with pytest.raises(ProviderUnavailable, match="not found"):
        await collect(make_generator(tmp_path))
    assert llm_server.call_count == 1


async def test_error_event_in_the_stream_is_provider_unavailable(tmp_path, llm_server):
    body = 'data: {"error": {"message": "context length exceeded"}}\n\n'
    llm_server.mock(return_value=httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body))
    with pytest.raises(ProviderUnavailable, match="context length exceeded"):
        await collect(make_generator(tmp_path))


async def test_garbage_stream_is_provider_unavailable(tmp_path, llm_server):
    llm_server.mock(return_value=httpx.Response(200, headers=EVENT_STREAM, content=b"data: {not json\n\n"))
    with pytest.raises(ProviderUnavailable, match="unreadable"):
        await collect(make_generator(tmp_path))


async def test_a_response_that_is_not_an_event_stream_is_refused_without_retry(tmp_path, llm_server):
    # e.g. a server that ignores `stream: true` and answers with one JSON completion
    llm_server.mock(return_value=httpx.Response(200, json={"choices": [{"message": {"content": "Hi"}}]}))
    with pytest.raises(ProviderUnavailable, match="text/event-stream"):
        await collect(make_generator(tmp_path))
    assert llm_server.call_count == 1


async def test_empty_answer_is_provider_unavailable(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response())
    with pytest.raises(ProviderUnavailable, match="empty answer"):
        await collect(make_generator(tmp_path))


async def test_failure_after_pieces_were_shown_is_not_retried(tmp_path, llm_server):
    class BreaksMidStream(httpx.AsyncByteStream):
        async def __aiter__(self):
            yield b'data: {"choices":[{"index":0,"delta":{"content":"Refunds take"}}]}\n\n'
            raise httpx.ReadTimeout("stalled")

    llm_server.mock(return_value=httpx.Response(200, headers=EVENT_STREAM, stream=BreaksMidStream()))
    shown = []
    with pytest.raises(ProviderUnavailable, match="interrupted"):
        async for piece in make_generator(tmp_path).stream("q", SOURCES, []):
            shown.append(piece)
    assert shown == ["Refunds take"]
    assert llm_server.call_count == 1


async def test_the_prompt_asks_for_the_exact_not_found_reply(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Refunds take 30 days [1]."))
    await collect(make_generator(tmp_path))
    system = json.loads(llm_server.calls.last.request.content)["messages"][0]
    assert system["role"] == "system" and NOT_FOUND_ANSWER in system["content"]


@pytest.mark.parametrize("pieces", [
    (NOT_FOUND_ANSWER,),
    ("I couldn", "’t find anything about that in your documents."),
    ("Not found", " in the documents [3]."),  # [3] does not exist: dropped first
    ("The provided documents don't say how to do that.",),
])
async def test_a_not_found_reply_becomes_the_not_found_answer(tmp_path, llm_server, pieces):
    llm_server.mock(return_value=sse_response(*pieces))
    assert await collect(make_generator(tmp_path), query="How do I list pods with kubectl?") == [NOT_FOUND_ANSWER]


async def test_an_answer_streams_as_it_comes_once_it_cannot_be_a_not_found_reply(tmp_path, llm_server):
    llm_server.mock(return_value=sse_response("Refunds", " take", " 30 days", " [1]."))
    pieces = await collect(make_generator(tmp_path))
    assert pieces[0] == "Refunds" and len(pieces) >= 3


async def test_no_sources_is_not_found_without_calling_the_model(tmp_path, llm_server):
    assert await collect(make_generator(tmp_path), sources=[]) == [NOT_FOUND_ANSWER]
    assert not llm_server.called
