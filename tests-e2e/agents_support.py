"""Shared by the agent suites (test_agents.py, test_mcp_oauth.py): an MCP session with a bearer
credential, a tool result's structured content, a document saved over REST."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


@asynccontextmanager
async def mcp_session(rag_url: str, token: str) -> AsyncIterator[Client]:
    """The official MCP client on `rag_url`/mcp with `Authorization: Bearer <token>`."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:
        async with Client(streamable_http_client(f"{rag_url}/mcp", http_client=http)) as client:
            yield client


def ok(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


def save(rag_url: str, token: str, title: str, content: str) -> str:
    response = httpx.post(f"{rag_url}/save-document", headers={"Authorization": f"Bearer {token}"},
                          json={"title": title, "content": content}, timeout=60)
    assert response.status_code == 201, response.text
    return response.json()["document_id"]
