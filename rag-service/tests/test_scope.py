"""Token scope (API keys): a `read` token may search, chat, read history and documents; the
write routes need `write` or no scope at all (a browser session's token). Real app, real JWTs."""

from __future__ import annotations

from typing import Any

import pytest

TEXT = "Kingfishers dive from a perch into clear water and swallow the fish head first."

# Every route that changes a user's data or spends the embedding budget on their behalf.
WRITE_ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/save-document", {"json": {"title": "Kingfisher", "content": TEXT}}),
    ("POST", "/documents/upload", {"files": {"files": ("kingfisher.txt", TEXT.encode(), "text/plain")}}),
    ("POST", "/documents/batch", {"json": {"items": [{"title": "Kingfisher", "content": TEXT}]}}),
    ("DELETE", "/documents/{document_id}", {}),
    ("DELETE", "/history/{conversation_id}", {}),
    ("POST", "/embed", {"json": {"text": "kingfisher"}}),
]
# What each write route answers on success: a new document is 201; a batch answers per item (200).
CREATED = {"/save-document": 201, "/documents/upload": 201}


async def seed(client: Any, auth_headers: Any, user_id: str) -> dict[str, str]:
    """A document and a conversation owned by `user_id`, made with a full-scope token."""
    full = auth_headers(user_id)
    saved = await client.post("/save-document", json={"title": "Seed", "content": TEXT}, headers=full)
    assert saved.status_code == 201, saved.text
    chat = await client.post("/chat", json={"query": "How do kingfishers eat?", "stream": False}, headers=full)
    assert chat.status_code == 200, chat.text
    return {"document_id": saved.json()["document_id"], "conversation_id": chat.json()["conversation_id"]}


async def call(client: Any, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    return await client.request(method, path, headers=headers, **kwargs)


async def counts(client: Any, headers: dict[str, str]) -> tuple[int, int]:
    documents = await client.get("/documents", headers=headers)
    history = await client.get("/history", headers=headers)
    assert documents.status_code == 200 and history.status_code == 200
    return documents.json()["total"], history.json()["total"]


@pytest.mark.parametrize(("method", "path", "kwargs"), WRITE_ROUTES, ids=[f"{m} {p}" for m, p, _ in WRITE_ROUTES])
async def test_a_read_token_is_refused_on_every_write_route_and_changes_nothing(
    client: Any, auth_headers: Any, user_id: str, method: str, path: str, kwargs: dict[str, Any]
) -> None:
    ids = await seed(client, auth_headers, user_id)
    read = auth_headers(user_id, scope="read")
    before = await counts(client, read)
    response = await call(client, method, path.format(**ids), read, **kwargs)
    assert response.status_code == 403, response.text
    error = response.json()["error"]
    assert error["code"] == "insufficient_scope"
    assert "'read'" in error["message"] and "write" in error["message"]
    assert await counts(client, read) == before
    assert (await client.get(f"/documents/{ids['document_id']}", headers=read)).status_code == 200
    assert (await client.get(f"/history/{ids['conversation_id']}", headers=read)).status_code == 200


@pytest.mark.parametrize("scope", ["write", None], ids=["write", "no scope (session)"])
@pytest.mark.parametrize(("method", "path", "kwargs"), WRITE_ROUTES, ids=[f"{m} {p}" for m, p, _ in WRITE_ROUTES])
async def test_write_and_session_tokens_may_use_every_write_route(
    client: Any, auth_headers: Any, user_id: str, method: str, path: str, kwargs: dict[str, Any], scope: str | None
) -> None:
    ids = await seed(client, auth_headers, user_id)
    headers = auth_headers(user_id, scope=scope) if scope else auth_headers(user_id)
    # New content, so the write really creates a document.
    fresh = {"/save-document": {"json": {"title": "Other", "content": TEXT + " " + scope_tag(scope)}},
             "/documents/upload": {"files": {"files": ("other.txt", (TEXT + " upload " + scope_tag(scope)).encode(),
                                                       "text/plain")}},
             "/documents/batch": {"json": {"items": [{"title": "Other", "content": TEXT + " batch " + scope_tag(scope)}]}}}
    response = await call(client, method, path.format(**ids), headers, **fresh.get(path, kwargs))
    assert response.status_code == CREATED.get(path, 200), response.text
    if path == "/documents/batch":
        assert response.json()["created"] == 1, response.text


def scope_tag(scope: str | None) -> str:
    return f"scope {scope or 'none'}"


async def test_a_read_token_may_search_chat_and_read(client: Any, auth_headers: Any, user_id: str) -> None:
    ids = await seed(client, auth_headers, user_id)
    read = auth_headers(user_id, scope="read")
    search = await client.post("/search", json={"query": "kingfisher fish"}, headers=read)
    assert search.status_code == 200, search.text
    assert search.json()["results"], "the read token sees the user's documents"
    chat = await client.post("/chat", json={"query": "What do kingfishers eat?", "stream": False}, headers=read)
    assert chat.status_code == 200, chat.text
    for path in ("/documents", f"/documents/{ids['document_id']}", "/history", f"/history/{ids['conversation_id']}"):
        response = await client.get(path, headers=read)
        assert response.status_code == 200, f"{path}: {response.text}"


@pytest.mark.parametrize("forged", ["admin", "READ", "", ["write"], 1])
async def test_a_token_with_an_unknown_scope_is_refused_everywhere(
    client: Any, auth_headers: Any, user_id: str, forged: Any
) -> None:
    headers = auth_headers(user_id, scope=forged)
    for method, path, kwargs in [("GET", "/documents", {}), ("POST", "/search", {"json": {"query": "fish"}}),
                                 ("POST", "/save-document", {"json": {"title": "Forged", "content": TEXT}})]:
        response = await call(client, method, path, headers, **kwargs)
        assert response.status_code == 401, f"{method} {path} with scope={forged!r}: {response.text}"
    assert (await client.get("/documents", headers=auth_headers(user_id))).json()["total"] == 0
