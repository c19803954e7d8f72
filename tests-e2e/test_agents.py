"""Agents and OpenAI-compatible clients against the real stack (real auth-service, real
rag-service processes): the official `mcp` client calls every tool at /mcp with a JWT and with
an API key; the official `openai` client (`base_url=.../v1`, `api_key=<API key>`) gets cited
answers, streamed and not; scopes, isolation, the 401 metadata pointer, revocation within
API_KEY_CACHE_SECONDS, and bad input in each protocol's own error shape.

This module's rag-service runs with API_KEY_CACHE_SECONDS=1 so that revocation is observed in
about a second (the default, 10 s, is the same code with a longer window)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from agents_support import mcp_session, ok, save
from conftest import ARTIFACTS, sign_up
from stack import Service, start_rag

CACHE_SECONDS = 1.0
TEXT = ("Beavers build dams of branches and mud across streams. The pond behind the dam keeps the "
        "entrance of their lodge under water, safe from wolves.")
TOOLS = {"search", "ask", "list_documents", "get_document", "save_document", "list_collections"}


@pytest.fixture(scope="module")
def agents_rag(stack: dict[str, Service], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    rag = start_rag(Path(tmp_path_factory.mktemp("agents-rag")), ARTIFACTS, stack["auth"].url, name="rag-agents",
                    API_KEY_CACHE_SECONDS=str(CACHE_SECONDS))
    try:
        yield rag.url
    finally:
        rag.stop()


class Account:
    def __init__(self, auth_url: str) -> None:
        self.auth_url = auth_url
        signed_up = sign_up(auth_url)
        self.session = signed_up["session_token"]
        self.jwt = signed_up["access_token"]
        self.user_id = signed_up["user"]["id"]

    def create_key(self, scope: str) -> dict[str, Any]:
        response = httpx.post(f"{self.auth_url}/auth/api-keys", headers={"Authorization": f"Bearer {self.session}"},
                              json={"name": f"agent {scope}", "scope": scope}, timeout=30)
        assert response.status_code == 201, response.text
        return response.json()

    def revoke(self, key_id: str) -> None:
        response = httpx.delete(f"{self.auth_url}/auth/api-keys/{key_id}",
                                headers={"Authorization": f"Bearer {self.session}"}, timeout=30)
        assert response.status_code == 200, response.text


@pytest.mark.asyncio
@pytest.mark.parametrize("credential", ["jwt", "api_key"])
async def test_the_mcp_client_lists_and_calls_every_tool(auth_url: str, agents_rag: str, credential: str) -> None:
    account = Account(auth_url)
    token = account.jwt if credential == "jwt" else account.create_key("write")["key"]
    async with mcp_session(agents_rag, token) as client:
        assert {tool.name for tool in (await client.list_tools()).tools} == TOOLS
        saved = ok(await client.call_tool("save_document", {"title": "Beavers", "content": TEXT}))
        assert saved["created"] is True
        document_id = saved["document_id"]
        assert ok(await client.call_tool("search", {"query": "why do beavers build dams", "mode": "hybrid",
                                                    "top_k": 2}))["results"][0]["document_id"] == document_id
        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        answer = ok(await client.call_tool("ask", {"question": "Why do beavers build dams?"},
                                           progress_callback=on_progress))
        assert "[1]" in answer["answer"] and answer["sources"][0]["document_id"] == document_id
        assert "".join(m or "" for m in progress[1:]) == answer["answer"]
        assert [d["id"] for d in ok(await client.call_tool("list_documents", {}))["documents"]] == [document_id]
        assert ok(await client.call_tool("get_document", {"document_id": document_id}))["content"] == TEXT
        assert [c["id"] for c in ok(await client.call_tool("list_collections", {}))["collections"]] == ["personal"]


@pytest.mark.asyncio
async def test_a_read_key_is_refused_save_document_and_other_users_documents_never_appear(
    auth_url: str, agents_rag: str
) -> None:
    owner, other = Account(auth_url), Account(auth_url)
    document_id = save(agents_rag, owner.jwt, "Beavers", TEXT)
    read_key = other.create_key("read")["key"]
    async with mcp_session(agents_rag, read_key) as client:
        refused = await client.call_tool("save_document", {"title": "Beavers", "content": TEXT})
        assert refused.is_error and refused.content[0].text.startswith("Error executing tool save_document: "
                                                                       "insufficient_scope")
        assert ok(await client.call_tool("list_documents", {}))["documents"] == []
        assert ok(await client.call_tool("search", {"query": "beaver dams lodge"}))["results"] == []
        assert ok(await client.call_tool("ask", {"question": "Why do beavers build dams?"}))["sources"] == []
        hidden = await client.call_tool("get_document", {"document_id": document_id})
        assert hidden.is_error and "not_found" in hidden.content[0].text


def test_without_a_token_mcp_answers_401_with_the_protected_resource_metadata(auth_url: str,
                                                                              agents_rag: str) -> None:
    response = httpx.post(f"{agents_rag}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                          headers={"Accept": "application/json, text/event-stream"}, timeout=30)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    pointer = f"{agents_rag}/.well-known/oauth-protected-resource/mcp"
    assert f'resource_metadata="{pointer}"' in challenge
    metadata = httpx.get(pointer, timeout=30).json()
    assert metadata["resource"] == f"{agents_rag}/mcp"
    assert metadata["authorization_servers"] == [auth_url]
    # The named authorization server is the auth-service that signs the tokens we accept.
    assert httpx.get(f"{auth_url}/api/auth/jwks", timeout=30).json()["keys"]


@pytest.mark.asyncio
async def test_bad_mcp_input_gets_errors_in_mcps_own_shapes(auth_url: str, agents_rag: str) -> None:
    account = Account(auth_url)
    async with mcp_session(agents_rag, account.jwt) as client:
        huge = await client.call_tool("ask", {"question": "x" * 1_000_000})
        assert huge.is_error and "query_too_long" in huge.content[0].text
        unknown = await client.call_tool("search", {"query": "beavers", "top_k": 0})
        assert unknown.is_error and "top_k" in unknown.content[0].text
    broken = httpx.post(f"{agents_rag}/mcp", content=b"{not json", timeout=30,
                        headers={"Authorization": f"Bearer {account.jwt}", "Content-Type": "application/json",
                                 "Accept": "application/json, text/event-stream"})
    assert broken.status_code == 400
    assert broken.json()["error"]["code"] == -32700  # JSON-RPC parse error


def test_the_openai_client_gets_cited_answers_streamed_and_not(auth_url: str, agents_rag: str) -> None:
    account = Account(auth_url)
    key = account.create_key("write")["key"]
    document_id = save(agents_rag, key, "Beavers", TEXT)  # saved with the key itself as the bearer
    client = openai.OpenAI(base_url=f"{agents_rag}/v1", api_key=key, max_retries=0)
    [model] = [m.id for m in client.models.list().data]
    assert model == "extractive"
    question = [{"role": "user", "content": "Why do beavers build dams?"}]
    completion = client.chat.completions.create(model=model, messages=question)
    content = completion.choices[0].message.content
    assert "[1]" in content and "dams" in content
    assert completion.model_extra["sources"][0]["document_id"] == document_id
    assert completion.usage.total_tokens > completion.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(model=model, messages=question, stream=True))
    assert chunks[0].model_extra["sources"][0]["document_id"] == document_id
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_revoked_key_stops_working_within_the_cache_window(auth_url: str, agents_rag: str) -> None:
    account = Account(auth_url)
    created = account.create_key("read")
    client = openai.OpenAI(base_url=f"{agents_rag}/v1", api_key=created["key"], max_retries=0)
    assert client.models.list().data
    account.revoke(created["id"])
    revoked_at = time.monotonic()
    while True:
        try:
            client.models.list()
        except openai.AuthenticationError as refused:
            assert refused.code == "invalid_api_key"
            break
        assert time.monotonic() - revoked_at < CACHE_SECONDS + 2, "the revoked key still works"
        time.sleep(0.1)
    assert time.monotonic() - revoked_at < CACHE_SECONDS + 2
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(model="extractive", messages=[{"role": "user", "content": "beavers?"}])


@pytest.mark.parametrize(("kwargs", "error", "code"), [
    ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, openai.NotFoundError, "model_not_found"),
    ({"model": "extractive", "messages": []}, openai.BadRequestError, "validation_error"),
    ({"model": "extractive", "messages": [{"role": "user", "content": "x" * 1_000_000}]}, openai.BadRequestError,
     "query_too_long"),
    ({"model": "extractive", "messages": [{"role": "tool", "content": "4", "tool_call_id": "t"},
                                          {"role": "user", "content": "hi"}]}, openai.BadRequestError,
     "invalid_value"),
    ({"model": "extractive", "messages": [{"role": "assistant", "content": "hi"}]}, openai.BadRequestError,
     "invalid_value"),
])
def test_bad_openai_input_gets_a_4xx_in_openais_shape(auth_url: str, agents_rag: str, kwargs: dict[str, Any],
                                                     error: type[Exception], code: str) -> None:
    key = Account(auth_url).create_key("read")["key"]
    client = openai.OpenAI(base_url=f"{agents_rag}/v1", api_key=key, max_retries=0)
    with pytest.raises(error) as raised:
        client.chat.completions.create(**kwargs)
    assert raised.value.code == code
    assert set(raised.value.body) == {"message", "type", "param", "code"}


def test_a_wrong_key_is_an_openai_shaped_401(agents_rag: str) -> None:
    client = openai.OpenAI(base_url=f"{agents_rag}/v1", api_key=f"rag_{uuid.uuid4().hex}", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.models.list()
    assert refused.value.body["type"] == "authentication_error"
