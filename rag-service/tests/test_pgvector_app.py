"""The whole service on one Postgres: documents, chats and vectors (VECTOR_STORE=pgvector) in
the same database of the embedded PostgreSQL 18 + pgvector server, over HTTP."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures_apps import running_app, settings_for
from rag_service.storage.access import Access, access_filter
from rag_service.storage.pgvector import PgVectorStore
from test_search_api import save, search, unique_word

pytestmark = pytest.mark.postgres


async def test_upload_search_delete_and_isolation_on_pgvector(
        issuer, tmp_path, make_pgvector_database: Callable[[], str],
        auth_headers: Callable[..., dict[str, str]]) -> None:
    settings = settings_for(issuer, tmp_path, database_url=make_pgvector_database(), vector_store="pgvector")
    async with running_app(settings) as (app, client):
        store = app.state.runtime.vector_store
        assert isinstance(store, PgVectorStore)
        owner, intruder = auth_headers("pg-owner"), auth_headers("pg-intruder")
        word = unique_word()
        content = f"The {word} valve opens when the boiler pressure passes nine bar."
        document_id = await save(client, owner, "Boiler notes", content, {"plant": "north"})

        for mode in ("hybrid", "dense", "keyword"):
            response = await search(client, owner, query=f"{word} pressure", mode=mode)
            assert response.status_code == 200, response.text
            [hit] = response.json()["results"]
            assert (hit["document_id"], hit["text"], hit["metadata"]) == (document_id, content, {"plant": "north"})
            # Another user asking the same question finds nothing of the owner's.
            response = await search(client, intruder, query=f"{word} pressure", mode=mode)
            assert response.status_code == 200 and response.json()["results"] == []

        assert (await client.get("/health")).status_code == 200
        assert await store.count(access_filter(Access("pg-owner"))) == 1
        assert (await client.delete(f"/documents/{document_id}", headers=owner)).status_code == 200
        assert await store.count(access_filter(Access("pg-owner"))) == 0
        response = await search(client, owner, query=f"{word} pressure")
        assert response.json()["results"] == []
