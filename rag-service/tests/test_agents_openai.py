"""The OpenAI-compatible API under /v1 (agents/openai_api.py), driven by the official `openai`
client over the app's ASGI interface, and by raw requests for the wire format: models, cited
completions (JSON and `chat.completion.chunk` SSE ending with [DONE]), conversation context,
extension fields, embeddings, OpenAI-shaped errors for bad input and for auth."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx
import httpx2
import openai
import pytest
import respx

from rag_service.core.retry import RetryPolicy
from rag_service.providers.openai_generator import OpenAIGenerator

TEXT = ("Puffins nest in burrows on sea cliffs. They carry several small fish crosswise in their "
        "colourful bills back to the burrow.")
OTHER = "Lighthouses warn ships away from rocks with a rotating beam of light."


@pytest.fixture
async def saved(client: Any, auth_headers: Any, user_id: str) -> str:
    response = await client.post("/save-document", json={"title": "Puffins", "content": TEXT},
                                 headers=auth_headers(user_id))
    assert response.status_code == 201
    return response.json()["document_id"]


@pytest.fixture
async def sdk(app: Any, issuer: Any, user_id: str) -> Any:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")
    client = openai.AsyncOpenAI(base_url="http://test/v1", api_key=issuer.add_api_key(user_id, "write"),
                                http_client=http, max_retries=0)
    yield client
    await client.close()


async def test_models_lists_the_configured_answer_mode(sdk: Any) -> None:
    models = await sdk.models.list()
    assert [m.id for m in models.data] == ["extractive"]
    assert models.data[0].owned_by == "rag-service"


async def test_a_completion_is_a_cited_answer_with_its_sources_and_usage(sdk: Any, saved: str) -> None:
    completion = await sdk.chat.completions.create(
        model="extractive", messages=[{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Where do puffins nest?"}])
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert "burrow" in choice.message.content and "[1]" in choice.message.content
    extra = completion.model_extra
    assert extra["sources"][0]["document_id"] == saved and extra["sources"][0]["number"] == 1
    assert extra["conversation_id"]
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_a_streamed_completion_is_the_same_answer_in_chunks(sdk: Any, saved: str) -> None:
    question = [{"role": "user", "content": "Where do puffins nest?"}]
    whole = await sdk.chat.completions.create(model="extractive", messages=question)
    stream = await sdk.chat.completions.create(model="extractive", messages=question, stream=True,
                                               stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert {c.object for c in chunks} == {"chat.completion.chunk"}
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["sources"][0]["document_id"] == saved
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


async def test_the_stream_ends_with_done(client: Any, issuer: Any, user_id: str, saved: str) -> None:
    response = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {issuer.mint(user_id)}"},
                                 json={"model": "extractive", "stream": True,
                                       "messages": [{"role": "user", "content": "Where do puffins nest?"}]})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    data = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    assert all(json.loads(d)["object"] == "chat.completion.chunk" for d in data[:-1])


async def test_earlier_messages_are_context_and_extensions_narrow_the_sources(
    sdk: Any, client: Any, auth_headers: Any, user_id: str, saved: str
) -> None:
    other = await client.post("/save-document", json={"title": "Lighthouses", "content": OTHER},
                              headers=auth_headers(user_id))
    follow_up = await sdk.chat.completions.create(model="extractive", messages=[
        {"role": "user", "content": "Where do puffins nest?"},
        {"role": "assistant", "content": "In burrows on sea cliffs [1]."},
        {"role": "user", "content": [{"type": "text", "text": "What do they carry?"}]},
    ])
    assert follow_up.model_extra["sources"][0]["document_id"] == saved
    assert "fish" in follow_up.choices[0].message.content
    narrowed = await sdk.chat.completions.create(
        model="extractive", messages=[{"role": "user", "content": "Where do puffins nest?"}],
        extra_body={"filters": {"document_ids": [other.json()["document_id"]]}, "top_k": 1})
    assert [s["document_id"] for s in narrowed.model_extra["sources"]] == [other.json()["document_id"]]
    elsewhere = await sdk.chat.completions.create(
        model="extractive", messages=[{"role": "user", "content": "Where do puffins nest?"}],
        extra_body={"collection": "no-such-collection"})
    assert elsewhere.model_extra["sources"] == []


async def test_embeddings_come_from_the_services_embedder(sdk: Any, runtime: Any, client: Any,
                                                          auth_headers: Any) -> None:
    result = await sdk.embeddings.create(model=runtime.embedder.model_name, input=["puffins", "lighthouses"])
    assert [len(item.embedding) for item in result.data] == [runtime.embedder.dimension] * 2
    # The SDK asked for base64; plain floats are the same vector as POST /embed's.
    floats = await client.post("/v1/embeddings", headers=auth_headers(),
                               json={"model": runtime.embedder.model_name, "input": "puffins"})
    rest = await client.post("/embed", headers=auth_headers(), json={"text": "puffins"})
    assert floats.json()["data"][0]["embedding"] == rest.json()["embedding"]
    assert result.data[0].embedding == pytest.approx(rest.json()["embedding"], abs=1e-6)
    assert result.usage.prompt_tokens > 0
    with pytest.raises(openai.NotFoundError):
        await sdk.embeddings.create(model="text-embedding-3-small", input="puffins")


@pytest.mark.parametrize(("body", "status", "code", "param"), [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, 404, "model_not_found", None),
    ({"model": "extractive", "messages": []}, 400, "validation_error", "messages"),
    ({"model": "extractive", "messages": [{"role": "user", "content": "x" * 1_000_000}]}, 400,
     "query_too_long", None),
    ({"model": "extractive", "messages": [{"role": "tool", "content": "42"}, {"role": "user", "content": "hi"}]},
     400, "invalid_value", None),
    ({"model": "extractive", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]},
     400, "invalid_value", None),
    ({"model": "extractive", "messages": [{"role": "user", "content": "   "}]}, 400, "invalid_value", None),
    ({"model": "extractive", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     400, "invalid_value", None),
    ({"model": "extractive"}, 400, "validation_error", "messages"),
    ({"model": "extractive", "messages": [{"role": "user", "content": "hi"}], "top_k": 99}, 400,
     "validation_error", "top_k"),
])
async def test_bad_input_is_a_4xx_in_openais_error_shape_and_saves_nothing(
    client: Any, auth_headers: Any, user_id: str, body: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    headers = auth_headers(user_id)
    response = await client.post("/v1/chat/completions", json=body, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"] and "x" * 100 not in error["message"]
    assert (await client.get("/history", headers=headers)).json()["total"] == 0


async def test_the_sdk_raises_its_own_errors(sdk: Any) -> None:
    with pytest.raises(openai.BadRequestError) as empty:
        await sdk.chat.completions.create(model="extractive", messages=[])
    assert empty.value.code == "validation_error"
    with pytest.raises(openai.BadRequestError) as roles:
        await sdk.chat.completions.create(model="extractive", messages=[{"role": "assistant", "content": "hi"}])
    assert "last message" in roles.value.message


@pytest.mark.parametrize(("authorization", "code"), [
    (None, "unauthorized"), ("Bearer rag_" + "0" * 64, "invalid_api_key"), ("Bearer junk", "unauthorized")])
async def test_auth_failures_are_openai_shaped_401s(client: Any, authorization: str | None, code: str) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.get("/v1/models", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.json()["error"]["code"] == code


async def test_a_read_key_may_chat_but_not_embed(app: Any, issuer: Any, user_id: str) -> None:
    http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")
    async with openai.AsyncOpenAI(base_url="http://test/v1", api_key=issuer.add_api_key(user_id, "read"),
                                  http_client=http, max_retries=0) as read:
        answer = await read.chat.completions.create(model="extractive",
                                                    messages=[{"role": "user", "content": "Where do puffins nest?"}])
        assert answer.model_extra["sources"] == []
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await read.embeddings.create(model="all-MiniLM-L6-v2", input="puffins")
        assert refused.value.code == "insufficient_scope"


async def test_the_rest_api_keeps_its_own_error_shape(client: Any) -> None:
    response = await client.get("/documents")
    assert set(response.json()["error"]) == {"code", "message", "request_id"}


LLM_URL = "http://llm.test:11434/v1"


async def test_a_configured_model_is_listed_and_its_failure_mid_stream_is_an_openai_error_event(
    app_factory: Any, runtime: Any, client: Any, auth_headers: Any, user_id: str, saved: str
) -> None:
    """With an OpenAI-compatible answer server configured (answered here by respx), /v1/models
    names it, and when it fails after the stream has started the client gets OpenAI's error
    event (the SDK raises it) instead of [DONE]."""
    settings = runtime.settings.model_copy(update={"llm_provider": "openai", "openai_base_url": LLM_URL + "/",
                                                   "openai_model": "llama3.2", "llm_timeout_seconds": 2.0})
    generator = OpenAIGenerator(settings, retry_policy=RetryPolicy(max_retries=1, base_delay=0.001, max_delay=0.002))
    with respx.mock(assert_all_called=False) as llm:
        llm.route(host="127.0.0.1").pass_through()
        llm.post(f"{LLM_URL}/chat/completions").mock(
            return_value=httpx.Response(500, json={"error": {"message": "model crashed"}}))
        async with app_factory(settings, runtime=dataclasses.replace(runtime, generator=generator)) as (app, _):
            http = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://test")
            async with openai.AsyncOpenAI(base_url="http://test/v1", api_key="unused", http_client=http,
                                          max_retries=0, default_headers=auth_headers(user_id)) as sdk:
                assert [m.id for m in (await sdk.models.list()).data] == ["openai:llama3.2"]
                stream = await sdk.chat.completions.create(
                    model="openai:llama3.2", stream=True, messages=[{"role": "user", "content": "Where do puffins nest?"}])
                with pytest.raises(openai.APIError) as failed:
                    async for _ in stream:
                        pass
                assert failed.value.body["code"] == "provider_unavailable"
                assert failed.value.body["type"] == "server_error" and "unavailable" in failed.value.message
    await generator.aclose()
