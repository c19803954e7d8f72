"""POST /search over HTTP: the seed contract, validation, auth, isolation and rate limiting.

Runs on the shared app from conftest (real JWTs, SQLite, Qdrant Edge, MiniLM); documents
are saved through POST /save-document.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

RESULT_KEYS = {"document_id", "title", "chunk_index", "text", "score", "metadata", "start", "end"}


def unique_word() -> str:
    # Letters only, so BM25 keeps it as one token.
    return "zq" + "".join(chr(ord("a") + int(c, 16) % 26) for c in uuid.uuid4().hex[:10])


async def save(client: httpx.AsyncClient, headers: dict[str, str], title: str, content: str,
               metadata: dict[str, Any] | None = None) -> str:
    response = await client.post("/save-document", headers=headers,
                                 json={"title": title, "content": content, "metadata": metadata or {}})
    assert response.status_code == 201, response.text
    return response.json()["document_id"]


async def search(client: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> httpx.Response:
    return await client.post("/search", headers=headers, json=body)


async def test_search_returns_the_seed_contract(client: httpx.AsyncClient,
                                                auth_headers: Callable[..., dict[str, str]]) -> None:
    headers = auth_headers()
    word = unique_word()
    content = f"The {word} reactor is cooled by liquid sodium flowing through the core."
    document_id = await save(client, headers, "Reactor notes", content, {"team": "core"})

    response = await search(client, headers, query=f"{word} cooling", include_embedding=True)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"results", "query_embedding"}
    assert len(body["query_embedding"]) == 384
    assert all(isinstance(x, float) for x in body["query_embedding"])
    (result,) = body["results"]
    assert set(result) == RESULT_KEYS
    assert result["document_id"] == document_id
    assert result["title"] == "Reactor notes"
    assert result["chunk_index"] == 0
    assert result["text"] == content
    assert result["metadata"] == {"team": "core"}
    assert result["score"] > 0
    assert (result["start"], result["end"]) == (0, len(content))


async def test_modes_filters_and_embedding_flag(client: httpx.AsyncClient,
                                                auth_headers: Callable[..., dict[str, str]]) -> None:
    headers = auth_headers()
    word = unique_word()
    first = await save(client, headers, "First", f"{word} appears in the first note about gardening.", {"n": 1})
    second = await save(client, headers, "Second", f"{word} appears in the second note about sailing.", {"n": 2})

    for mode in ("hybrid", "dense", "keyword"):
        response = await search(client, headers, query=word, mode=mode, top_k=10)
        assert response.status_code == 200, response.text
        assert {r["document_id"] for r in response.json()["results"]} == {first, second}

    narrowed = await search(client, headers, query=word, filters={"document_ids": [second]})
    assert [r["document_id"] for r in narrowed.json()["results"]] == [second]
    by_metadata = await search(client, headers, query=word, filters={"metadata": {"n": [1]}})
    assert [r["document_id"] for r in by_metadata.json()["results"]] == [first]
    top_one = await search(client, headers, query=word, top_k=1)
    assert len(top_one.json()["results"]) == 1

    lean = await search(client, headers, query=word, mode="keyword", include_embedding=False)
    assert lean.status_code == 200 and lean.json()["query_embedding"] == []
    assert len(lean.json()["results"]) == 2
    by_default = await search(client, headers, query=word)
    assert by_default.status_code == 200 and by_default.json()["query_embedding"] == []
    assert len(by_default.json()["results"]) == 2


async def test_search_requires_a_token(client: httpx.AsyncClient) -> None:
    response = await client.post("/search", json={"query": "anything"})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"
    forged = await client.post("/search", json={"query": "anything"}, headers={"Authorization": "Bearer not.a.jwt"})
    assert forged.status_code == 401


@pytest.mark.parametrize(("body", "named"), [
    ({"query": "lava", "top_k": 0}, "top_k"),
    ({"query": "lava", "top_k": 51}, "top_k"),
    ({"query": "lava", "top_k": "five"}, "top_k"),
    ({"query": "x" * 2001}, "2000"),
    ({"query": ""}, "query"),
    ({"query": "   "}, "query"),
    ({}, "query"),
    ({"query": 42}, "query"),
    ({"query": "lava", "mode": "semantic"}, "mode"),
    ({"query": "lava", "min_score": 2}, "min_score"),
    ({"query": "lava", "mode": "keyword", "min_score": 0.5}, "min_score"),
    ({"query": "lava", "filters": {"user_id": "someone-else"}}, "user_id"),
    ({"query": "lava", "filters": {"colour": "red"}}, "colour"),
    ({"query": "lava", "filters": {"metadata": {"a": {"$gt": 1}}}}, "metadata"),
    ({"query": "lava", "filters": {"metadata": {"a": [{"b": 1}]}}}, "metadata"),
    ({"query": "lava", "filters": {"metadata": {"a": list(range(51))}}}, "metadata"),
    ({"query": "lava", "filters": {"metadata": {"a b": 1}}}, "metadata"),
    ({"query": "lava", "filters": {"document_ids": ["x"] * 101}}, "document_ids"),
    ({"query": "lava", "filters": "document_ids=x"}, "filters"),
    ({"query": "lava", "unexpected": True}, "unexpected"),
])
async def test_bad_requests_are_422_naming_the_problem(client: httpx.AsyncClient,
                                                       auth_headers: Callable[..., dict[str, str]],
                                                       body: dict[str, Any], named: str) -> None:
    response = await search(client, auth_headers(), **body)
    assert response.status_code == 422, response.text
    assert named in response.json()["error"]["message"]


async def test_another_user_cannot_search_my_documents(client: httpx.AsyncClient,
                                                       auth_headers: Callable[..., dict[str, str]]) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:8]}", f"bob-{uuid.uuid4().hex[:8]}"
    word = unique_word()
    alice_doc = await save(client, auth_headers(alice), "Alice's secret",
                           f"The {word} launch code is kept in the blue safe.", {"owner": alice, "tag": "secret"})
    bob_doc = await save(client, auth_headers(bob), "Bob's note", "Bob keeps a grocery list of apples and bread.",
                         {"tag": "secret"})

    attempts: list[dict[str, Any]] = [
        {"query": word},
        {"query": f"{word} launch code safe", "filters": {"document_ids": [alice_doc]}},
        {"query": word, "filters": {"metadata": {"owner": alice}}},
        {"query": word, "filters": {"metadata": {"user_id": alice}}},
        {"query": word, "filters": {"metadata": {"tag": "secret"}}},
        {"query": word, "filters": {"document_ids": [alice_doc, bob_doc]}},
    ]
    for attempt in attempts:
        for mode in ("hybrid", "dense", "keyword"):
            response = await search(client, auth_headers(bob), mode=mode, top_k=50, **attempt)
            assert response.status_code == 200, response.text
            assert alice_doc not in {r["document_id"] for r in response.json()["results"]}, (attempt, mode)
    # Bob's own document still comes back when his filter names it.
    own = await search(client, auth_headers(bob), query="launch code", filters={"metadata": {"tag": "secret"}})
    assert [r["document_id"] for r in own.json()["results"]] == [bob_doc]
    # And Alice still finds hers.
    mine = await search(client, auth_headers(alice), query=word, mode="keyword")
    assert [r["document_id"] for r in mine.json()["results"]] == [alice_doc]


async def test_search_spends_the_costly_budget(app_factory: Any, make_settings: Callable[..., Any],
                                               auth_headers: Callable[..., dict[str, str]]) -> None:
    settings = make_settings(rate_limit_costly="2/minute")
    async with app_factory(settings) as (_, client):
        headers = auth_headers()
        for _ in range(2):
            assert (await search(client, headers, query="anything", mode="keyword")).status_code == 200
        limited = await search(client, headers, query="anything", mode="keyword")
        assert limited.status_code == 429
        assert int(limited.headers["Retry-After"]) >= 1
        # The budget is per user: someone else is not affected.
        assert (await search(client, auth_headers(), query="anything", mode="keyword")).status_code == 200
