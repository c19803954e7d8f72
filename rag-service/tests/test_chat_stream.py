"""POST /chat as Server-Sent Events: event order parsed from the raw stream, errors as the
last event, and a client that disconnects mid-answer over a real socket (uvicorn on loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import respx
import uvicorn

from chat_support import BREAD, VOLCANO, PacedGenerator, cited, parse_sse
from rag_service.history.service import HistoryService
from rag_service.providers.base import NOT_FOUND_ANSWER
from rag_service.core.retry import RetryPolicy
from rag_service.storage.access import Access

GEMINI_URL = r"^https://generativelanguage\.googleapis\.com/.*"
NO_RETRY = RetryPolicy(max_retries=0)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def save(client: Any, headers: dict[str, str], title: str, content: str) -> str:
    response = await client.post("/save-document", json={"title": title, "content": content}, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["document_id"]


async def test_stream_sends_sources_then_deltas_then_done(client: Any, auth_headers: Any) -> None:
    headers = auth_headers(new_user())
    bread_id = await save(client, headers, "Baking notes", BREAD)
    await save(client, headers, "Volcanoes", VOLCANO)

    response = await client.post("/chat", json={"query": "Why does bread rise?", "stream": True}, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "sources" and names[-1] == "done"
    assert set(names[1:-1]) == {"delta"} and len(names) >= 3
    sources = events[0][1]
    assert sources["sources"][0]["document_id"] == bread_id
    assert [s["number"] for s in sources["sources"]] == list(range(1, len(sources["sources"]) + 1))
    answer = "".join(data["text"] for name, data in events if name == "delta")
    assert cited(answer) and cited(answer) <= set(range(1, len(sources["sources"]) + 1))
    done = events[-1][1]
    assert done["conversation_id"] == sources["conversation_id"]
    assert done["message_id"] == sources["message_id"]
    timing = done["timing"]
    assert 0 <= timing["retrieval_ms"] <= timing["first_delta_ms"] <= timing["total_ms"]
    # The outcome: found, by the default generator, citing exactly the numbers in the text.
    assert done["answer_found"] is True and done["generator"] == "extractive"
    assert set(done["cited_sources"]) == cited(answer) and len(done["cited_sources"]) == len(cited(answer))
    # Which sources are cited is not known when `sources` is sent.
    assert all("cited" not in source for source in sources["sources"])

    stored = (await client.get(f"/history/{done['conversation_id']}", headers=headers)).json()
    assert stored["messages"][1]["content"] == answer
    assert stored["messages"][1]["status"] == "complete"
    assert {s["number"] for s in stored["messages"][1]["sources"] if s["cited"]} == cited(answer)


async def test_stream_done_event_says_not_found_and_cites_nothing(client: Any, auth_headers: Any) -> None:
    headers = auth_headers(new_user())
    await save(client, headers, "Baking notes", BREAD)
    await save(client, headers, "Volcanoes", VOLCANO)

    response = await client.post("/chat", headers=headers,
                                 json={"query": "How do I list all pods in a namespace with kubectl?", "stream": True})

    events = parse_sse(response.text)
    answer = "".join(data["text"] for name, data in events if name == "delta")
    done = events[-1]
    assert done[0] == "done"
    assert answer == NOT_FOUND_ANSWER
    assert (done[1]["answer_found"], done[1]["cited_sources"], done[1]["generator"]) == (False, [], "extractive")


async def test_accept_header_selects_the_stream_and_stream_false_wins(client: Any, auth_headers: Any) -> None:
    headers = auth_headers(new_user())
    sse = {**headers, "Accept": "text/event-stream"}

    by_accept = await client.post("/chat", json={"query": "hello"}, headers=sse)
    forced_json = await client.post("/chat", json={"query": "hello", "stream": False}, headers=sse)

    assert by_accept.headers["content-type"].startswith("text/event-stream")
    assert [name for name, _ in parse_sse(by_accept.text)][::len(parse_sse(by_accept.text)) - 1] == ["sources", "done"]
    assert forced_json.headers["content-type"].startswith("application/json")
    assert forced_json.json()["sources"] == []


async def test_errors_before_the_stream_starts_are_plain_json(client: Any, auth_headers: Any) -> None:
    headers = auth_headers(new_user())
    missing = await client.post("/chat", json={"query": "hi", "stream": True, "conversation_id": str(uuid.uuid4())},
                                headers=headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


async def test_provider_failure_mid_stream_is_an_error_event(
    app_factory: Any, runtime: Any, auth_headers: Any, tmp_path: Any
) -> None:
    from rag_service.config import Settings
    from rag_service.providers.gemini_generator import GeminiGenerator

    gemini_settings = Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="test-key",
                               llm_timeout_seconds=2.0)
    failing = dataclasses.replace(runtime, generator=GeminiGenerator(gemini_settings, retry_policy=NO_RETRY))
    headers = auth_headers(new_user())

    async with app_factory(runtime.settings, runtime=failing) as (_, client):
        await save(client, headers, "Baking notes", BREAD)
        with respx.mock(assert_all_called=False) as mocked:
            mocked.route(host="127.0.0.1").pass_through()  # the JWKS issuer is real
            gemini = mocked.route(url__regex=GEMINI_URL).respond(
                503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
            response = await client.post("/chat", json={"query": "Why does bread rise?", "stream": True},
                                         headers=headers)
        events = parse_sse(response.text)
        conversation_id = events[0][1]["conversation_id"]
        stored = (await client.get(f"/history/{conversation_id}", headers=headers)).json()

    assert gemini.called
    assert response.status_code == 200  # the stream had started: the failure is its last event
    assert [name for name, _ in events] == ["sources", "error"]
    error = events[-1][1]
    assert error["code"] == "provider_unavailable" and "gemini" in error["message"].lower()
    assert error["message_id"] == events[0][1]["message_id"]
    assert [(m["role"], m["status"]) for m in stored["messages"]] == [("user", "complete"), ("assistant", "failed")]


@asynccontextmanager
async def serve_on_loopback(app: Any) -> AsyncIterator[str]:
    """The app behind a real uvicorn socket (its lifespan already ran in `app_factory`)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


async def test_client_disconnect_mid_stream_leaves_an_incomplete_answer(
    app_factory: Any, runtime: Any, auth_headers: Any
) -> None:
    user = new_user()
    headers = auth_headers(user)
    # Pieces arrive 0.4 s apart (and 0.4 s pass after the last one), so the client can
    # leave while the answer is still being written.
    paced = dataclasses.replace(runtime, generator=PacedGenerator(runtime.generator, delay=0.4))

    async with app_factory(runtime.settings, runtime=paced) as (app, asgi_client):
        await save(asgi_client, headers, "Baking notes", BREAD)
        async with serve_on_loopback(app) as base_url, httpx.AsyncClient(base_url=base_url, timeout=10) as http:
            seen: list[str] = []
            async with http.stream("POST", "/chat", json={"query": "Why does bread rise?", "stream": True},
                                   headers=headers) as response:
                assert response.status_code == 200
                buffer = ""
                async for text in response.aiter_text():
                    buffer += text
                    events = parse_sse(buffer)
                    seen = [name for name, _ in events]
                    if "delta" in seen:
                        first_delta = next(data["text"] for name, data in events if name == "delta")
                        conversation_id = events[0][1]["conversation_id"]
                        break  # leaving the block closes the connection mid-stream

            history = HistoryService(runtime.sessionmaker)
            for _ in range(100):  # the server notices the disconnect asynchronously
                messages = (await history.get_conversation(Access(user), conversation_id)).messages
                if messages[1].content:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(2.0)  # longer than the rest of the answer (<= 3 pieces) would take
            messages = (await history.get_conversation(Access(user), conversation_id)).messages

    assert "done" not in seen
    question, answer = messages
    assert (question.role, question.content, question.status) == ("user", "Why does bread rise?", "complete")
    assert (answer.role, answer.status) == ("assistant", "incomplete")
    assert answer.content.startswith(first_delta)
    assert answer.sources and answer.sources[0]["number"] == 1
