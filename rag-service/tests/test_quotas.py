"""Per-user quotas (documents, characters) and the per-process ingestion cap, on real
SQLite and Postgres with a real Qdrant Edge store and MiniLM."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from ingestion_support import SMALL_CHUNKS, Parts, check_invariant, new_user, paragraphs, service
from rag_service.documents.quotas import IngestionGate, QuotaExceeded
from rag_service.errors import ServiceUnavailable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.storage.access import Access, scoped
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.models import Document
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder


@pytest.fixture(scope="session")
def embedder(settings) -> LocalEmbedder:
    return LocalEmbedder(settings)


@pytest_asyncio.fixture
async def parts(database_url, make_settings, embedder, tmp_path) -> AsyncIterator[Parts]:
    settings = make_settings(database_url=database_url, quota_max_documents=3, quota_max_characters=10_000,
                             **SMALL_CHUNKS)
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(tmp_path / "qdrant", collection="quotas", dimension=embedder.dimension)
    await store.ensure_collection()
    yield Parts(settings, engine, sessionmaker, store, SparseEncoder(), embedder, IngestionGate(0, 0))
    await store.close()
    await engine.dispose()


async def rows_of(parts: Parts, user: str) -> int:
    async with parts.sessionmaker() as session:
        return await session.scalar(scoped(select(func.count()).select_from(Document), Access(user), Document))


async def test_concurrent_uploads_cannot_overshoot_the_document_quota(parts: Parts, database_url) -> None:
    user = new_user()

    async def upload(i: int) -> object:
        # On Postgres every upload gets its own gate, as if each ran in another replica:
        # only the database's advisory lock serializes them.
        gate = IngestionGate(0, 0) if database_url else parts.ingestion_gate
        async with parts.sessionmaker() as session:
            try:
                return await service(parts, session, gate=gate).save(user, f"Doc {i}", paragraphs(f"q{i}", 2))
            except QuotaExceeded as exc:
                return exc

    for _ in range(2):  # a second wave, all refused
        results = await asyncio.gather(*(upload(i) for i in range(8)))
        refused = [r for r in results if isinstance(r, QuotaExceeded)]
        assert all(r.status_code == 413 and r.code == "quota_exceeded" for r in refused)
        assert await rows_of(parts, user) == 3
    assert "QUOTA_MAX_DOCUMENTS" in refused[0].message and refused[0].details["max_documents"] == 3
    await check_invariant(parts, [user])
    async with parts.sessionmaker() as session:
        usage = (await service(parts, session).summary(user)).usage
    assert (usage.documents, usage.max_documents) == (3, 3)


async def test_character_quota_counts_stored_characters(parts: Parts) -> None:
    user = new_user()
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        first, _ = await docs.save(user, "Big", "a" * 6_000)
        with pytest.raises(QuotaExceeded, match="character quota exceeded.*QUOTA_MAX_CHARACTERS"):
            await docs.save(user, "Too much", "b" * 5_000)
        assert (await docs.summary(user)).usage.characters == 6_000
        # Freed by a delete; a duplicate of stored content costs nothing.
        await docs.delete(user, first.id)
        second, created = await docs.save(user, "Fits now", "b" * 5_000)
        assert created and (await docs.save(user, "Again", "b" * 5_000))[1] is False
        usage = (await docs.summary(user)).usage
    assert (usage.documents, usage.characters, usage.max_characters) == (1, 5_000, 10_000)
    await check_invariant(parts, [user])


async def test_zero_means_unlimited(parts: Parts, make_settings) -> None:
    user = new_user()
    unlimited = make_settings(database_url=parts.settings.database_url, quota_max_documents=0,
                              quota_max_characters=0, **SMALL_CHUNKS)
    async with parts.sessionmaker() as session:
        docs = service(parts, session, settings=unlimited)
        for i in range(5):
            await docs.save(user, f"U{i}", f"unlimited document number {i}")
        assert (await docs.summary(user)).usage.documents == 5


async def test_ingestion_cap_makes_excess_uploads_wait_then_busy(parts: Parts) -> None:
    user = new_user()
    gate = IngestionGate(1, wait_seconds=0.2)
    async with gate.slot():  # every slot taken, as by a long ingestion
        async with parts.sessionmaker() as session:
            with pytest.raises(ServiceUnavailable) as caught:
                await service(parts, session, gate=gate).save(user, "Waits", "a document that waits its turn")
    assert caught.value.code == "busy" and caught.value.headers == {"Retry-After": "1"}
    assert await rows_of(parts, user) == 0  # refused before anything was stored
    # A waiting upload proceeds as soon as a slot frees up.
    release = asyncio.Event()

    async def occupy() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(occupy())
    await asyncio.sleep(0)
    async with parts.sessionmaker() as session:
        waiting = asyncio.create_task(service(parts, session, gate=gate).save(user, "Later", "it gets its turn"))
        await asyncio.sleep(0)
        release.set()
        document, created = await waiting
    await holder
    assert created and document.status == "ready"


async def test_uploads_waiting_for_a_slot_hold_no_database_connection(parts: Parts) -> None:
    """Waiting saves and moves (up to INGEST_QUEUE_TIMEOUT_SECONDS) hold no pooled connection:
    20 waiting uploads once emptied the pool, and unrelated requests failed after the pool's
    30 s timeout (bench/load_test.py, 20 users)."""
    user = new_user()
    gate = IngestionGate(1, wait_seconds=30)
    async with parts.sessionmaker() as session:
        document, _ = await service(parts, session, gate=gate).save(user, "Moved", "a document to move")
        collection = await service(parts, session, gate=gate).collections.create(Access(user), "Target")
    release = asyncio.Event()

    async def occupy() -> None:
        async with gate.slot():
            await release.wait()

    holder = asyncio.create_task(occupy())
    await asyncio.sleep(0)
    # Two saves (the quota is 3 documents) and a move, all waiting for the one slot.
    sessions = [parts.sessionmaker() for _ in range(3)]
    waiting = [asyncio.create_task(service(parts, session, gate=gate).save(user, f"Waits {i}", f"waiting text {i}"))
               for i, session in enumerate(sessions[:2])]
    waiting.append(asyncio.create_task(service(parts, sessions[2], gate=gate).move(user, document.id, collection.id)))
    for _ in range(200):  # until every task waits on the slot (each has read the database first)
        await asyncio.sleep(0.01)
        if gate.waiting() == len(waiting):
            break
    await asyncio.sleep(0.2)
    assert not any(task.done() for task in waiting)
    assert parts.engine.sync_engine.pool.checkedout() == 0
    release.set()
    await asyncio.gather(holder, *waiting)
    for session in sessions:
        await session.close()
    assert await rows_of(parts, user) == 3


def quota_view(summary: dict) -> dict:
    return {key: summary[key] for key in ("documents", "characters", "max_documents", "max_characters")}


async def test_usage_and_quota_over_http(app_factory, make_settings, auth_headers) -> None:
    settings = make_settings(quota_max_documents=1, quota_max_characters=0, **SMALL_CHUNKS)
    headers = auth_headers(new_user())
    async with app_factory(settings) as (_, client):
        empty = (await client.get("/documents/summary", headers=headers)).json()
        assert quota_view(empty) == {"documents": 0, "characters": 0, "max_documents": 1, "max_characters": 0}
        saved = await client.post("/save-document", headers=headers, json={"title": "One", "content": "first one"})
        assert saved.status_code == 201
        refused = await client.post("/save-document", headers=headers, json={"title": "Two", "content": "second"})
        assert refused.status_code == 413 and refused.json()["error"]["code"] == "quota_exceeded"
        assert "QUOTA_MAX_DOCUMENTS" in refused.json()["error"]["message"]
        usage = (await client.get("/documents/summary", headers=headers)).json()
        assert quota_view(usage) == {"documents": 1, "characters": len("first one"), "max_documents": 1,
                                     "max_characters": 0}
        listed = (await client.get("/documents", headers=headers)).json()
        assert listed["total"] == 1


def test_migration_backfills_character_counts_and_leaves_old_rows_claimable(make_settings) -> None:
    import sqlalchemy as sa

    from rag_service.storage.db import run_migrations as migrate

    settings = make_settings()
    migrate(settings, "0001_initial")
    engine = sa.create_engine(settings.sqlalchemy_url.replace("+aiosqlite", ""))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text(
                "INSERT INTO documents (id, user_id, title, content, content_hash, mime_type, metadata, status, "
                "chunk_count, created_at, updated_at) VALUES ('d1', 'u1', 't', 'héllo wörld', 'h', 'text/plain', "
                "'{}', 'indexing', 0, '2025-01-01 00:00:00', '2025-01-01 00:00:00')"))
        migrate(settings)
        with engine.connect() as connection:
            row = connection.execute(sa.text(
                "SELECT content_chars, generation, claimed_at FROM documents WHERE id = 'd1'")).one()
    finally:
        engine.dispose()
    assert tuple(row) == (len("héllo wörld"), 0, None)
