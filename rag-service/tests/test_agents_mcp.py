"""The MCP server at /mcp (agents/mcp_server.py), driven by the official `mcp` client over the
app's ASGI interface: every tool with a JWT and with an API key, scopes, isolation between
users, the 401 and its RFC 9728 metadata. tests-e2e/test_agents.py does the same over real
HTTP against the real auth-service."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from fixtures_issuer import ISSUER

TEXT = ("Ospreys hover over open water, then plunge feet first to seize fish near the surface. "
        "They nest on tall dead trees and on platforms near lakes.")
TOOLS = {"search", "ask", "list_documents", "get_document", "save_document", "list_collections"}


@asynccontextmanager
async def mcp_client(app: Any, token: str | None) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://test", headers=headers) as http:
        async with Client(streamable_http_client("http://test/mcp", http_client=http)) as client:
            yield client


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


@pytest.fixture
def jwt_for(issuer: Any) -> Any:
    return lambda user, **claims: issuer.mint(user, **claims)


@pytest.mark.parametrize("credential", ["jwt", "api_key"])
async def test_every_tool_works_with_a_jwt_and_with_an_api_key(app: Any, issuer: Any, user_id: str,
                                                               credential: str) -> None:
    token = issuer.mint(user_id) if credential == "jwt" else issuer.add_api_key(user_id, "write")
    async with mcp_client(app, token) as client:
        listed = await client.list_tools()
        tools = {tool.name: tool for tool in listed.tools}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.description and len(tool.description) > 40
            assert tool.input_schema["type"] == "object"
        assert tools["search"].input_schema["required"] == ["query"]
        assert set(tools["search"].input_schema["properties"]) == {"query", "collection", "mode", "top_k"}

        saved = structured(await client.call_tool("save_document", {"title": "Ospreys", "content": TEXT}))
        assert saved["created"] is True and saved["status"] == "ready"
        document_id = saved["document_id"]

        hits = structured(await client.call_tool("search", {"query": "how do ospreys catch fish", "top_k": 3}))
        assert hits["results"][0]["document_id"] == document_id

        progress: list[str | None] = []

        async def on_progress(done: float, total: float | None, message: str | None) -> None:
            progress.append(message)

        answer = structured(await client.call_tool("ask", {"question": "How do ospreys catch fish?"},
                                                   progress_callback=on_progress))
        assert "[1]" in answer["answer"]
        assert answer["sources"][0]["document_id"] == document_id
        assert progress and progress[0] == f"found {len(answer['sources'])} source(s)"
        assert "".join(m or "" for m in progress[1:]) == answer["answer"]

        documents = structured(await client.call_tool("list_documents", {}))
        assert [d["id"] for d in documents["documents"]] == [document_id]
        document = structured(await client.call_tool("get_document", {"document_id": document_id, "max_chars": 20}))
        assert document["content"] == TEXT[:20] and document["truncated"] is True
        assert document["content_chars"] == len(TEXT)

        collections = structured(await client.call_tool("list_collections", {}))
        assert [(c["id"], c["document_count"]) for c in collections["collections"]] == [("personal", 1)]


async def test_a_read_scoped_key_is_refused_save_document_and_nothing_is_saved(app: Any, issuer: Any,
                                                                               user_id: str) -> None:
    key = issuer.add_api_key(user_id, "read")
    async with mcp_client(app, key) as client:
        refused = await client.call_tool("save_document", {"title": "Ospreys", "content": TEXT})
        assert refused.is_error
        assert "insufficient_scope" in refused.content[0].text
        assert structured(await client.call_tool("list_documents", {}))["total"] == 0
        # Reading is allowed.
        assert structured(await client.call_tool("search", {"query": "ospreys"}))["results"] == []


async def test_another_users_documents_never_appear(app: Any, issuer: Any, user_id: str) -> None:
    async with mcp_client(app, issuer.mint(user_id)) as owner:
        document_id = structured(await owner.call_tool("save_document", {"title": "Ospreys", "content": TEXT}))[
            "document_id"]
    async with mcp_client(app, issuer.add_api_key(f"{user_id}-other", "write")) as other:
        assert structured(await other.call_tool("list_documents", {}))["documents"] == []
        assert structured(await other.call_tool("search", {"query": "ospreys plunge for fish"}))["results"] == []
        answer = structured(await other.call_tool("ask", {"question": "How do ospreys catch fish?"}))
        assert answer["sources"] == []
        missing = await other.call_tool("get_document", {"document_id": document_id})
        assert missing.is_error and "not_found" in missing.content[0].text
        private = await other.call_tool("search", {"query": "ospreys", "collection": "personal"})
        assert structured(private)["results"] == []


async def test_bad_tool_arguments_are_tool_errors_naming_the_problem(app: Any, issuer: Any, user_id: str) -> None:
    async with mcp_client(app, issuer.mint(user_id)) as client:
        too_many = await client.call_tool("search", {"query": "ospreys", "top_k": 500})
        assert too_many.is_error and "top_k" in too_many.content[0].text
        huge = await client.call_tool("ask", {"question": "x" * 1_000_000})
        assert huge.is_error and "query_too_long" in huge.content[0].text
        mode = await client.call_tool("search", {"query": "ospreys", "mode": "psychic"})
        assert mode.is_error and "mode" in mode.content[0].text


@pytest.mark.parametrize("authorization", [None, "Bearer ", "Basic dXNlcjpwYXNz", "Bearer rag_" + "0" * 64,
                                           "Bearer not-a-jwt"])
async def test_without_a_valid_credential_401_points_at_the_protected_resource_metadata(
    client: Any, authorization: str | None
) -> None:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if authorization:
        headers["Authorization"] = authorization
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "t", "version": "1"}}}
    response = await client.post("/mcp", json=initialize, headers=headers)
    assert response.status_code == 401
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'resource_metadata="http://test/.well-known/oauth-protected-resource/mcp"' in challenge
    assert response.json()["error"] == "invalid_token"
    if authorization and authorization.strip() not in ("Bearer", "Basic dXNlcjpwYXNz"):
        assert 'error="invalid_token"' in challenge

    for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
        metadata = await client.get(path)
        assert metadata.status_code == 200
        assert metadata.json() == {
            "resource": "http://test/mcp",
            "authorization_servers": [ISSUER],
            "scopes_supported": ["read", "write"],
            "bearer_methods_supported": ["header"],
            "resource_name": "rag-service MCP server",
        }


async def test_the_public_url_setting_names_the_resource(app_factory: Any, make_settings: Any) -> None:
    async with app_factory(make_settings(public_url="https://rag.example.com/")) as (_, client):
        response = await client.post("/mcp", json={})
        assert 'resource_metadata="https://rag.example.com/.well-known/oauth-protected-resource/mcp"' in \
            response.headers["www-authenticate"]
        assert (await client.get("/.well-known/oauth-protected-resource"))\
            .json()["resource"] == "https://rag.example.com/mcp"


async def test_mcp_calls_spend_the_same_rate_limit_as_rest(app_factory: Any, make_settings: Any,
                                                           issuer: Any) -> None:
    settings = make_settings(rate_limit_costly="2/minute")
    user = f"user-{uuid.uuid4().hex[:8]}"
    async with app_factory(settings) as (app, client):
        token = issuer.mint(user)
        assert (await client.post("/search", json={"query": "ospreys"},
                                  headers={"Authorization": f"Bearer {token}"})).status_code == 200
        async with mcp_client(app, token) as mcp:
            assert not (await mcp.call_tool("search", {"query": "ospreys"})).is_error
            limited = await mcp.call_tool("search", {"query": "ospreys"})
            assert limited.is_error and "rate_limited" in limited.content[0].text
        assert (await client.post("/search", json={"query": "ospreys"},
                                  headers={"Authorization": f"Bearer {token}"})).status_code == 429
