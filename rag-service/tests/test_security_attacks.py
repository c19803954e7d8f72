"""Hostile input against the real app: other users' ids, filter injection, pre-dated tokens,
secrets in logs. Malformed bodies, path traversal, NUL bytes and oversized requests are in
test_malformed_requests.py.

Every attack must end in a 4xx JSON error (or an empty result) and leave the victim's data
exactly as it was. Token forgery is covered in test_auth_tokens.py (see docs/security.md).
Tests marked with `db_client` run on both SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from rag_service.storage.access import Access, access_filter
from security_support import assert_json_error, new_user

SECRET = "The vault combination is 7319 and the launch code is ZEBRA-CAPRICORN."


async def save(client: Any, headers: dict, title: str, content: str, metadata: dict | None = None,
               collection_id: str | None = None) -> str:
    body: dict[str, Any] = {"title": title, "content": content}
    if collection_id is not None:
        body["collection_id"] = collection_id
    if metadata is not None:
        body["metadata"] = metadata
    response = await client.post("/save-document", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["document_id"]


async def snapshot(client: Any, runtime: Any, owner: str, headers: dict, doc_id: str, conv_id: str) -> tuple:
    """Everything the owner can see about one document and one conversation."""
    document = (await client.get(f"/documents/{doc_id}", headers=headers)).json()
    conversation = (await client.get(f"/history/{conv_id}", headers=headers)).json()
    vectors = await runtime.vector_store.count(access_filter(Access(owner), document_ids=[doc_id]))
    listing = (await client.get("/documents", headers=headers)).json()["total"]
    history = (await client.get("/history", headers=headers)).json()["total"]
    collections = (await client.get("/collections", headers=headers)).json()
    return document, conversation, vectors, listing, history, collections


@pytest.fixture
async def victim(db_client: Any, db_app: Any, auth_headers: Any) -> dict[str, Any]:
    """A user with one document (with metadata) in a collection of theirs, and one
    conversation about it."""
    owner = new_user()
    headers = auth_headers(owner)
    created = await db_client.post("/collections", json={"name": "Vault"}, headers=headers)
    assert created.status_code == 201, created.text
    collection_id = created.json()["id"]
    doc_id = await save(db_client, headers, "Vault notes", SECRET, {"team": "red", "year": 2024}, collection_id)
    chat = await db_client.post("/chat", json={"query": "What is the vault combination?"}, headers=headers)
    assert chat.status_code == 200, chat.text
    assert chat.json()["sources"], "the owner must find their own document"
    return {"id": owner, "headers": headers, "doc_id": doc_id, "conv_id": chat.json()["conversation_id"],
            "collection_id": collection_id, "runtime": db_app.state.runtime}


# --- cross-tenant reads and writes by id ----------------------------------------------------


def id_routes(app: Any) -> list[tuple[str, str]]:
    """(method, path template) of every operation that takes an id in its path."""
    return sorted((method.upper(), path) for path, operations in app.openapi()["paths"].items()
                  if "{" in path for method in operations)


async def test_other_users_ids_are_404_on_every_route_and_change_nothing(db_client, db_app, victim, auth_headers):
    client, runtime = db_client, victim["runtime"]
    before = await snapshot(client, runtime, victim["id"], victim["headers"], victim["doc_id"], victim["conv_id"])
    assert before[2] > 0 and before[3] == 1 and before[4] == 1

    attacker = new_user()
    headers = auth_headers(attacker)
    doc, conv = victim["doc_id"], victim["conv_id"]
    # Every route with an id in its path, found in the app (a new one is attacked too): the
    # victim's id of the kind the path parameter names.
    victims_ids = {"document_id": doc, "conversation_id": conv, "collection_id": victim["collection_id"]}
    # Valid bodies for the routes that take one, so that only the id can be what is refused.
    bodies = {("POST", "/documents/{document_id}/move"): {"collection_id": "personal"},
              ("PATCH", "/collections/{collection_id}"): {"name": "Stolen"}}
    attempts = []
    for method, template in id_routes(db_app):
        names = re.findall(r"{(\w+)}", template)
        assert set(names) <= set(victims_ids), f"{method} {template}: add the victim's id for {names} here"
        attempts.append(await client.request(method, template.format(**victims_ids), headers=headers,
                                             json=bodies.get((method, template))))
    assert len(attempts) >= 4  # GET and DELETE of /documents/{id} and /history/{id} at least
    attempts += [
        # Ids in a body.
        await client.post("/chat", json={"query": "What is the vault combination?", "conversation_id": conv},
                          headers=headers),
        await client.post("/chat", json={"query": "combination?", "conversation_id": conv, "stream": True},
                          headers=headers),
    ]
    for response in attempts:
        error = assert_json_error(response, 404)
        assert "ZEBRA" not in response.text and "7319" not in response.text
        assert victim["id"] not in error["message"]

    after = await snapshot(client, runtime, victim["id"], victim["headers"], doc, conv)
    assert after == before
    # The refused chats wrote nothing for the attacker either.
    assert (await client.get("/history", headers=headers)).json()["total"] == 0


async def test_filters_naming_another_users_data_find_nothing(db_client, victim, auth_headers):
    client = db_client
    attacker = new_user()
    headers = auth_headers(attacker)
    # The attacker has a document of their own, so an empty result is the filter at work.
    own = await save(client, headers, "Attacker notes", "My own notes about vaults and combinations.")
    narrowing = [
        {"collection_id": victim["collection_id"]},
        {"document_ids": [victim["doc_id"]]},
        {"document_ids": [victim["doc_id"], own]},
        {"metadata": {"team": "red"}},
        {"metadata": {"user_id": victim["id"]}},
        {"metadata": {"year": [2024, 2025]}},
    ]
    for filters in narrowing:
        for mode in ("hybrid", "dense", "keyword"):
            response = await client.post("/search", json={"query": "vault combination", "filters": filters,
                                                          "mode": mode, "include_embedding": False},
                                         headers=headers)
            assert response.status_code == 200, response.text
            ids = {hit["document_id"] for hit in response.json()["results"]}
            assert victim["doc_id"] not in ids and "ZEBRA" not in response.text, (filters, mode)
        chat = await client.post("/chat", json={"query": "What is the vault combination?", "filters": filters},
                                 headers=headers)
        assert chat.status_code == 200, chat.text
        assert {s["document_id"] for s in chat.json()["sources"]} <= {own}
        assert "7319" not in chat.text and "ZEBRA" not in chat.text

    # A `user_id` key (or any other key) outside `metadata` / `document_ids` is refused.
    for filters in ({"user_id": victim["id"]}, {"metadata": {"team": "red"}, "user_id": victim["id"]}):
        assert_json_error(await client.post("/search", json={"query": "vault", "filters": filters},
                                            headers=headers), 422)
        assert_json_error(await client.post("/chat", json={"query": "vault", "filters": filters},
                                            headers=headers), 422)


async def test_metadata_claiming_another_user_id_does_not_leak_into_their_search(db_client, auth_headers):
    victim, attacker = new_user(), new_user()
    victim_headers, attacker_headers = auth_headers(victim), auth_headers(attacker)
    planted = await save(db_client, attacker_headers, "Planted", "Quarterly volcano budget is 42 gold coins.",
                         {"user_id": victim, "owner": victim})
    for mode in ("hybrid", "dense", "keyword"):
        response = await db_client.post("/search", json={"query": "volcano budget gold", "mode": mode},
                                        headers=victim_headers)
        assert response.status_code == 200 and response.json()["results"] == [], response.text
    assert (await db_client.get(f"/documents/{planted}", headers=victim_headers)).status_code == 404


# --- filter injection -----------------------------------------------------------------------


INJECTED_FILTERS = [
    {"document_ids": {"$ne": "x"}},
    {"document_ids": {"$in": []}},
    {"document_ids": "not-a-list"},
    {"document_ids": []},
    {"document_ids": [""]},
    {"document_ids": [{"$gt": ""}]},
    {"document_ids": ["x" * 65]},
    {"document_ids": [f"d{i}" for i in range(101)]},
    {"metadata": {"team": {"$ne": "red"}}},
    {"metadata": {"team": {"nested": {"deeper": 1}}}},
    {"metadata": {"team": [["nested", "list"]]}},
    {"metadata": {"team": []}},
    {"metadata": {"team": None}},
    {"metadata": {"team": list(range(51))}},
    {"metadata": {f"k{i}": 1 for i in range(17)}},
    {"metadata": {"team": "x" * 257}},
    {"metadata": {"../user_id": "x"}},
    {"metadata": {"a[]": 1}},
    {"metadata": {"": 1}},
    {"metadata": {"a b": 1}},
    {"metadata": {"a.b.c.d.e": 1}},
    {"metadata": {"team\x00": "red"}},
    {"metadata": "team=red"},
    {"$or": [{"user_id": "x"}]},
    {"must": [{"key": "user_id", "match": {"any": ["a", "b"]}}]},
    {"should": []},
    [],
    "user_id = anything",
]


@pytest.mark.parametrize("filters", INJECTED_FILTERS, ids=[f"f{i}" for i in range(len(INJECTED_FILTERS))])
async def test_filter_injection_is_422_and_writes_nothing(client, auth_headers, filters):
    headers = auth_headers(new_user())
    for route in ("/search", "/chat"):
        error = assert_json_error(await client.post(route, json={"query": "vault", "filters": filters},
                                                    headers=headers), 422)
        assert "filters" in error["message"], error
    assert (await client.get("/history", headers=headers)).json()["total"] == 0


# --- tokens and logs ------------------------------------------------------------------------


async def test_a_token_issued_in_the_future_is_401(client, issuer):
    """A pre-dated token (iat an hour ahead) is refused like one not yet valid (nbf);
    the other forgeries are in test_auth_tokens.py."""
    import time

    token = issuer.mint(new_user(), iat=int(time.time()) + 3600)
    assert_json_error(await client.get("/me", headers={"Authorization": f"Bearer {token}"}), 401)


async def test_logs_never_contain_tokens_or_document_text(client, issuer, caplog):
    import logging

    from rag_service.observability import JsonLogFormatter

    user = new_user()
    token = issuer.mint(user)
    forged = token[:-6] + "AAAAAA"
    marker = "PLAINTEXT-CANARY-" + uuid.uuid4().hex
    with caplog.at_level(logging.DEBUG, logger="rag_service"):
        await client.post("/save-document", json={"title": marker, "content": f"{marker} in the body"},
                          headers={"Authorization": f"Bearer {token}"})
        await client.post("/search", json={"query": marker}, headers={"Authorization": f"Bearer {token}"})
        await client.get("/me", headers={"Authorization": f"Bearer {forged}"})
        await client.post("/save-document", json={"title": "t", "content": marker, "metadata": {"a": {"b": {
            "c": {"d": {"e": {"f": marker}}}}}}}, headers={"Authorization": f"Bearer {token}"})
    lines = [JsonLogFormatter().format(record) for record in caplog.records]
    assert any(user in line for line in lines), "the access log names the user"
    signature = token.rsplit(".", 1)[1]
    for line in lines:
        assert signature not in line and forged.rsplit(".", 1)[1] not in line
        assert token.split(".")[1] not in line  # not even the claims part
        assert marker not in line, line
