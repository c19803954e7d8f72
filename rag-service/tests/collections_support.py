"""Helpers shared by test_collections_api.py and test_collections_races.py: organizations,
callers with roles, and what a caller can see (listing, search in every mode, chat sources)
and what the vector store holds under one owner key."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from security_support import assert_json_error, new_user
from rag_service.storage.access import Access, access_filter, org_of

SEARCH_MODES = ("hybrid", "dense", "keyword")


def new_org() -> str:
    return f"org-{uuid.uuid4().hex[:10]}"


def orgs_claim(**roles: str) -> list[dict[str, str]]:
    return [{"id": org, "role": role} for org, role in roles.items()]


@dataclass
class Caller:
    """A user and the headers of its current token (re-minted by `with_orgs`)."""

    id: str
    headers: dict[str, str]


def caller(auth_headers: Any, roles: dict[str, str] | None = None, user_id: str | None = None) -> Caller:
    """A user whose token lists `roles` ({org id: role}); none: no `orgs` claim at all."""
    user_id = user_id or new_user()
    if not roles:
        return Caller(user_id, auth_headers(user_id))
    return Caller(user_id, auth_headers(user_id, orgs=[{"id": o, "role": r} for o, r in roles.items()]))


async def create_collection(client: Any, who: Caller, name: str, org: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if org is not None:
        body["organization_id"] = org
    response = await client.post("/collections", json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()


async def save(client: Any, who: Caller, title: str, content: str, collection_id: str | None = None,
               expect: int = 201) -> str:
    body: dict[str, Any] = {"title": title, "content": content}
    if collection_id is not None:
        body["collection_id"] = collection_id
    response = await client.post("/save-document", json=body, headers=who.headers)
    assert response.status_code == expect, response.text
    return response.json()["document_id"]


async def upload(client: Any, who: Caller, name: str, content: str, collection_id: str) -> Any:
    return await client.post("/documents/upload", files={"files": (name, content.encode(), "text/plain")},
                             data={"collection_id": collection_id}, headers=who.headers)


async def batch(client: Any, who: Caller, items: list[dict[str, Any]], collection_id: str) -> Any:
    return await client.post("/documents/batch", params={"collection_id": collection_id},
                             content=json.dumps({"items": items}),
                             headers={**who.headers, "content-type": "application/json"})


async def move(client: Any, who: Caller, document_id: str, collection_id: str) -> Any:
    return await client.post(f"/documents/{document_id}/move", json={"collection_id": collection_id},
                             headers=who.headers)


async def listed(client: Any, who: Caller, collection_id: str | None = None) -> set[str]:
    params = {"limit": 100, **({"collection_id": collection_id} if collection_id else {})}
    response = await client.get("/documents", params=params, headers=who.headers)
    assert response.status_code == 200, response.text
    return {document["id"] for document in response.json()["documents"]}


async def collection_ids(client: Any, who: Caller) -> list[str]:
    response = await client.get("/collections", headers=who.headers)
    assert response.status_code == 200, response.text
    return [collection["id"] for collection in response.json()["collections"]]


async def found(client: Any, who: Caller, query: str, collection_id: str | None = None) -> dict[str, set[str]]:
    """The document ids each search mode and /chat's sources find for `query` (optionally
    narrowed to one collection), keyed by mode and "chat"."""
    filters = {"filters": {"collection_id": collection_id}} if collection_id else {}
    hits: dict[str, set[str]] = {}
    for mode in SEARCH_MODES:
        response = await client.post("/search", json={"query": query, "mode": mode, "top_k": 50,
                                                      "include_embedding": False, **filters}, headers=who.headers)
        assert response.status_code == 200, response.text
        hits[mode] = {hit["document_id"] for hit in response.json()["results"]}
    chat = await client.post("/chat", json={"query": query, **filters}, headers=who.headers)
    assert chat.status_code == 200, chat.text
    hits["chat"] = {source["document_id"] for source in chat.json()["sources"]}
    return hits


async def finds_everywhere(client: Any, who: Caller, query: str, document_id: str,
                           collection_id: str | None = None) -> bool:
    """True when every search mode and chat find the document, False when none does (a
    mix fails the test: visibility must not depend on the mode)."""
    hits = await found(client, who, query, collection_id)
    seen = {route: document_id in ids for route, ids in hits.items()}
    assert len(set(seen.values())) == 1, seen
    return next(iter(seen.values()))


async def summary_documents(client: Any, who: Caller) -> int:
    response = await client.get("/documents/summary", headers=who.headers)
    assert response.status_code == 200, response.text
    return response.json()["documents"]


def owner_access(owner: str) -> Access:
    """An Access that reads exactly the points of one owner key: the user itself, or a
    user with no points of its own who is a member of the organization."""
    org = org_of(owner)
    return Access(owner) if org is None else Access(new_user(), {org: "member"})


async def points_of(vector_store: Any, owner: str, document_id: str | None = None) -> int:
    """Vector points carrying owner key `owner` (of one document, or all)."""
    ids = [document_id] if document_id else None
    return await vector_store.count(access_filter(owner_access(owner), document_ids=ids))


def assert_forbidden(response: Any) -> None:
    assert assert_json_error(response, 403)["code"] == "insufficient_role", response.text


def assert_not_found(response: Any) -> None:
    assert_json_error(response, 404)
