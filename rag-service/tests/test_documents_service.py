"""DocumentService with real parts: SQLite and Postgres, Qdrant Edge on disk, MiniLM, BM25.

Failures are injected by wrapping the real vector store / embedder (the wrapped call
really runs first), never by mocking the ingestion logic.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from rag_service.documents.maintenance import reindex_all, repair_interrupted_ingestions
from rag_service.documents.indexing import point_id
from rag_service.documents.service import DocumentService, DocumentServices
from rag_service.embeddings.service import EmbeddingService
from rag_service.errors import NotFound, PayloadTooLarge, ServiceUnavailable, Unprocessable
from rag_service.errors import ProviderUnavailable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.storage.access import Access, access_filter, scoped
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.models import Document, DocumentStatus
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint, QueryVectors

@dataclass
class Runtime:
    """The parts of `rag_service.runtime.Runtime` the documents feature uses."""

    settings: Any
    engine: Any
    sessionmaker: Any
    vector_store: Any
    sparse_encoder: Any
    embedder: Any

    @property
    def documents(self) -> DocumentServices:
        return DocumentServices(self.sessionmaker, self.vector_store, self.sparse_encoder, self.embedder,
                                self.settings)


LONG_TEXT = "\n\n".join(
    f"Section {i}. The storage engine flushes pages number {i} to disk after each checkpoint. "
    f"Readers see a consistent snapshot while writers append to the log, item {i}."
    for i in range(60)
)


@pytest.fixture(scope="session")
def embedder(settings) -> LocalEmbedder:
    return LocalEmbedder(settings)


@pytest_asyncio.fixture
async def runtime_parts(database_url, make_settings, embedder, tmp_path) -> AsyncIterator[Runtime]:
    """A Runtime of real parts on a fresh vector store (SQL schema shared per database)."""
    settings = make_settings(database_url=database_url)
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(tmp_path / "qdrant", collection="test", dimension=embedder.dimension)
    await store.ensure_collection()
    runtime = Runtime(settings=settings, engine=engine, sessionmaker=sessionmaker, vector_store=store,
                      sparse_encoder=SparseEncoder(), embedder=embedder)
    yield runtime
    await store.close()
    await engine.dispose()


def service(runtime: Runtime, session, **overrides: Any) -> DocumentService:
    parts = dict(vector_store=runtime.vector_store, sparse_encoder=runtime.sparse_encoder,
                 embedder=runtime.embedder, settings=runtime.settings)
    batch = overrides.pop("ingest_batch", 256)
    parts.update(overrides)
    return DocumentService(session, **parts, ingest_batch=batch)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


async def vectors_of(runtime: Runtime, user_id: str, document_id: str | None = None) -> int:
    where = access_filter(Access(user_id), document_ids=[document_id] if document_id else None)
    return await runtime.vector_store.count(where)


async def test_save_indexes_and_is_searchable(runtime_parts: Runtime) -> None:
    user = new_user()
    async with runtime_parts.sessionmaker() as session:
        document, created = await service(runtime_parts, session).save(
            user, "Storage engine notes", LONG_TEXT, {"team": "db", "tags": ["wal", "mvcc"]}, source_name="notes.txt"
        )
    assert created and document.status == DocumentStatus.READY
    assert document.chunk_count > 1
    assert await vectors_of(runtime_parts, user, document.id) == document.chunk_count
    query = "checkpoint flushes pages to disk"
    [dense] = await runtime_parts.embedder.embed([query], task="query")
    hits = await runtime_parts.vector_store.search(
        QueryVectors(dense=dense, sparse=runtime_parts.sparse_encoder.encode_query(query)),
        access_filter(Access(user)), limit=3,
    )
    assert hits and hits[0].document_id == document.id
    hit = hits[0]
    assert LONG_TEXT[hit.start : hit.end] == hit.text  # raw text stored, offsets exact
    assert hit.title == "Storage engine notes" and hit.metadata == {"team": "db", "tags": ["wal", "mvcc"]}
    assert hit.id == point_id(document.id, hit.chunk_index, document.generation)


async def test_duplicate_content_returns_the_existing_document(runtime_parts: Runtime) -> None:
    user = new_user()
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session)
        first, created = await docs.save(user, "Title", "Same content.\r\n")
        second, created_again = await docs.save(user, "Other title", "\n\nSame content.  \n\n")
        assert created and not created_again and second.id == first.id
        page = await docs.reads.list(user)
    assert page.total == 1 and await vectors_of(runtime_parts, user) == first.chunk_count


async def test_same_content_from_another_user_is_their_own_document(runtime_parts: Runtime) -> None:
    alice, bob = new_user(), new_user()
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session)
        a, _ = await docs.save(alice, "Shared", "Identical text in two accounts.")
        b, created = await docs.save(bob, "Shared", "Identical text in two accounts.")
        assert created and a.id != b.id
        with pytest.raises(NotFound):
            await docs.reads.get(bob, a.id)
        with pytest.raises(NotFound):
            await docs.delete(bob, a.id)
        assert (await docs.reads.get(alice, a.id)).id == a.id
    assert await vectors_of(runtime_parts, alice) == a.chunk_count
    assert await vectors_of(runtime_parts, bob) == b.chunk_count


async def test_delete_removes_row_and_vectors_only_of_that_document(runtime_parts: Runtime) -> None:
    user = new_user()
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session)
        keep, _ = await docs.save(user, "Keep", "This document stays.")
        gone, _ = await docs.save(user, "Gone", LONG_TEXT)
        await docs.delete(user, gone.id)
        with pytest.raises(NotFound):
            await docs.reads.get(user, gone.id)
    assert await vectors_of(runtime_parts, user, gone.id) == 0
    assert await vectors_of(runtime_parts, user, keep.id) == keep.chunk_count == 1


class FailingSecondUpsert:
    """The real store; the second upsert raises after the first one really wrote."""

    def __init__(self, store: Any) -> None:
        self._store, self.upserts = store, 0

    async def upsert(self, points: list[ChunkPoint]) -> None:
        self.upserts += 1
        if self.upserts >= 2:
            raise RuntimeError("disk full")
        await self._store.upsert(points)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_failure_mid_ingestion_leaves_no_vectors_and_a_retryable_row(runtime_parts: Runtime) -> None:
    user = new_user()
    flaky = FailingSecondUpsert(runtime_parts.vector_store)
    async with runtime_parts.sessionmaker() as session:
        with pytest.raises(ServiceUnavailable, match="internal error while indexing"):
            await service(runtime_parts, session, vector_store=flaky, ingest_batch=4).save(user, "Big", LONG_TEXT)
    assert flaky.upserts == 2  # the first batch was really written before the failure
    assert await vectors_of(runtime_parts, user) == 0
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session)
        [row] = (await docs.reads.list(user)).documents
        assert row.status == DocumentStatus.FAILED and "internal error" in row.error
        # Saving the same content again is the retry: same id, now ready.
        retried, created = await docs.save(user, "Big", LONG_TEXT)
    assert created and retried.id == row.id and retried.status == DocumentStatus.READY and retried.error is None
    assert await vectors_of(runtime_parts, user) == retried.chunk_count > 4


class EmbedderDownAfterFirstCall:
    def __init__(self, embedder: Any) -> None:
        self._embedder, self.calls = embedder, 0

    async def embed(self, texts: list[str], task: str = "document") -> list[list[float]]:
        self.calls += 1
        if self.calls >= 2:
            raise ProviderUnavailable("gemini", "429 after 4 retries")
        return await self._embedder.embed(texts, task=task)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


async def test_provider_outage_is_503_and_cleans_up(runtime_parts: Runtime) -> None:
    user = new_user()
    async with runtime_parts.sessionmaker() as session:
        down = EmbedderDownAfterFirstCall(runtime_parts.embedder)
        with pytest.raises(ProviderUnavailable) as caught:
            await service(runtime_parts, session, embedder=down, ingest_batch=4).save(user, "Doc", LONG_TEXT)
    assert caught.value.status_code == 503 and "unavailable" in caught.value.message
    assert await vectors_of(runtime_parts, user) == 0
    async with runtime_parts.sessionmaker() as session:
        [row] = (await service(runtime_parts, session).reads.list(user)).documents
    assert row.status == DocumentStatus.FAILED and "429" in row.error


async def test_interrupted_ingestion_is_repaired(runtime_parts: Runtime) -> None:
    user = new_user()
    # What a crash leaves: a committed `indexing` row and a stray vector of it.
    async with runtime_parts.sessionmaker() as session:
        crashed = Document(user_id=user, title="Crashed", content=LONG_TEXT, content_hash="f" * 64,
                           mime_type="text/plain", metadata_={}, status=DocumentStatus.INDEXING)
        session.add(crashed)
        await session.commit()
        crashed_id = crashed.id
    [dense] = await runtime_parts.embedder.embed(["stray"])
    stray = ChunkPoint(id=point_id(crashed_id, 999), owner=user, document_id=crashed_id, chunk_index=999,
                       text="stray", title="Crashed", start=0, end=5, dense=dense,
                       sparse=runtime_parts.sparse_encoder.encode_documents(["stray"])[0])
    await runtime_parts.vector_store.upsert([stray])
    assert await repair_interrupted_ingestions(runtime_parts.documents) >= 1
    async with runtime_parts.sessionmaker() as session:
        repaired = await service(runtime_parts, session).reads.get(user, crashed_id)
    assert repaired.status == DocumentStatus.READY and repaired.chunk_count > 1
    # Re-indexed from scratch: exactly its chunks, the stray point is gone.
    assert await vectors_of(runtime_parts, user, crashed_id) == repaired.chunk_count


async def test_reindex_all_rebuilds_a_wiped_store(runtime_parts: Runtime) -> None:
    user = new_user()
    async with runtime_parts.sessionmaker() as session:
        a, _ = await service(runtime_parts, session).save(user, "A", LONG_TEXT)
        b, _ = await service(runtime_parts, session).save(user, "B", "A short one.")
    await runtime_parts.vector_store.delete(access_filter(Access(user)))
    assert await vectors_of(runtime_parts, user) == 0
    seen: list[tuple[int, int]] = []
    report = await reindex_all(runtime_parts.documents, on_progress=lambda done, total: seen.append((done, total)))
    assert report.failed == 0 and report.documents >= 2 and seen[-1][0] == seen[-1][1]
    assert await vectors_of(runtime_parts, user) == a.chunk_count + b.chunk_count


async def test_input_limits(runtime_parts: Runtime, make_settings) -> None:
    user = new_user()
    small = make_settings(database_url=runtime_parts.settings.database_url, max_document_chars=50,
                          max_metadata_bytes=64, max_title_chars=10)
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session, settings=small)
        with pytest.raises(PayloadTooLarge, match="50 characters"):
            await docs.save(user, "T", "x" * 51)
        with pytest.raises(Unprocessable, match="empty"):
            await docs.save(user, "T", " \n\t ")
        with pytest.raises(Unprocessable, match="title"):
            await docs.save(user, "T" * 11, "ok")
        with pytest.raises(Unprocessable, match="64 bytes"):
            await docs.save(user, "T", "ok", {"k": "v" * 100})
        with pytest.raises(Unprocessable, match="deeper than 5"):
            await docs.save(user, "T", "ok", {"a": {"b": {"c": {"d": {"e": 1}}}}})
        with pytest.raises(Unprocessable, match="longer than 64"):
            await docs.save(user, "T", "ok", {"k" * 65: 1})
        with pytest.raises(Unprocessable, match=r"'\.'"):
            await docs.save(user, "T", "ok", {"user_id.x": 1})
        with pytest.raises(Unprocessable, match="JSON object"):
            await docs.save(user, "T", "ok", ["not", "an", "object"])
        with pytest.raises(Unprocessable, match="finite"):
            await docs.save(user, "T", "ok", {"n": float("nan")})
        assert (await docs.reads.list(user)).total == 0
    assert await vectors_of(runtime_parts, user) == 0


async def test_list_pages_newest_first_and_only_own(runtime_parts: Runtime) -> None:
    user, other = new_user(), new_user()
    async with runtime_parts.sessionmaker() as session:
        docs = service(runtime_parts, session)
        ids = [(await docs.save(user, f"Doc {i}", f"Document number {i}."))[0].id for i in range(5)]
        await docs.save(other, "Not yours", "Someone else's text.")
        first, last = await docs.reads.list(user, page=1, limit=2), await docs.reads.list(user, page=3, limit=2)
        assert (first.total, first.pages, last.pages) == (5, 3, 3)
        assert [d.id for d in first.documents] == ids[::-1][:2]
        assert [d.id for d in last.documents] == ids[:1]
        assert (await docs.reads.list(user, page=4, limit=2)).documents == []
        with pytest.raises(Unprocessable):
            await docs.reads.list(user, page=1, limit=runtime_parts.settings.max_page_size + 1)
        rows = (await session.scalars(scoped(select(Document), Access(user), Document))).all()
        assert len(rows) == 5


async def test_embed_query(runtime_parts: Runtime) -> None:
    embeddings = EmbeddingService(runtime_parts.embedder, runtime_parts.settings)
    vector = await embeddings.embed_query("hello")
    assert len(vector) == 384
    with pytest.raises(PayloadTooLarge):
        await embeddings.embed_query("x" * (runtime_parts.settings.max_embed_chars + 1))
    with pytest.raises(Unprocessable):
        await embeddings.embed_query("   ")
