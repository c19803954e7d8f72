"""Ingestion under any interleaving: concurrent upload / reindex / delete / repair on real
SQLite and Postgres, a real Qdrant Edge store and MiniLM, then the invariant
(`ingestion_support.check_invariant`): every `ready` document has exactly `chunk_count`
vectors, no vector exists without its row, a delete removes both.

One chunk per batch, so every run interleaves with the others at every upsert and
heartbeat. A "thief" repair runs with a lease of a millisecond: it takes over claims of
live runs, the harshest form of "start-up repair racing an upload".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import select

from ingestion_support import (
    SMALL_CHUNKS,
    Parts,
    check_invariant,
    new_user,
    paragraphs,
    repair_interrupted_ingestions,
    service,
    wait_for_row,
)
from race_rounds import Round, with_lease
from rag_service.errors import Conflict, NotFound, ServiceUnavailable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.storage.access import Access, scoped
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.models import Document, DocumentStatus
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder

ROUNDS = 3


@pytest.fixture(scope="session")
def embedder(settings) -> LocalEmbedder:
    return LocalEmbedder(settings)


@pytest_asyncio.fixture
async def parts(own_database_url, make_settings, embedder, tmp_path) -> AsyncIterator[Parts]:
    # A database of its own: the repairs here must be the only ones that see its stale rows.
    settings = make_settings(database_url=own_database_url, **SMALL_CHUNKS)
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(tmp_path / "qdrant", collection="races", dimension=embedder.dimension)
    await store.ensure_collection()
    yield Parts(settings, engine, sessionmaker, store, SparseEncoder(), embedder)
    await store.close()
    await engine.dispose()


async def test_concurrent_upload_reindex_delete_repair_keep_the_invariant(parts: Parts) -> None:
    thief = with_lease(parts, lease=0.001)
    rounds = []
    for seed in range(ROUNDS):
        race = Round(parts, thief, seed)
        await race.run()
        rounds.append(race)
        assert race.unexpected_errors() == [], f"round {seed}"
        statuses = await check_invariant(parts, [race.user], race.deleted_ids)
        # Documents nobody deleted all end ready (no false 404, nothing lost).
        async with parts.sessionmaker() as session:
            listed = {d.title: d.status for d in (await service(parts, session).reads.list(race.user, limit=100)).documents}
        for title in set(race.titles) - race.deleted_titles:
            assert listed.get(title) == DocumentStatus.READY, (seed, title, listed)
        assert set(statuses.values()) <= {DocumentStatus.READY}
    # Repair found nothing left to do once every run finished.
    assert await repair_interrupted_ingestions(parts) == 0
    await check_invariant(parts, [r.user for r in rounds], set().union(*(r.deleted_ids for r in rounds)))


async def test_reindex_that_starts_after_its_document_was_deleted_is_an_honest_404(parts: Parts) -> None:
    """An interleaving that can fail the test above under load: a reindex task of a title
    deleted in the round first looks at the table after the upload stored the row and the
    delete removed it. The harness polled 4,000 times (20+ s), then failed the round with
    `reindex doc-N-M: AssertionError`; it is the same honest 404 as a claim that finds the
    row gone."""
    race = Round(parts, with_lease(parts, 0.001), seed=0)
    title = sorted(race.deleted_titles)[0]
    ordered = [("upload", title, race.upload), ("upload", title, race.upload),
               ("delete", title, race.delete), ("reindex", title, race.reindex)]
    results = []
    for _, _, step in ordered:  # one after the other: the reindex never sees the row
        try:
            results.append(await step(title))
        except Exception as exc:  # recorded and judged like a racing round's outcomes
            results.append(exc)
    race.record(ordered, results)
    assert race.unexpected_errors() == []
    assert isinstance(results[-1], NotFound) and len(race.deleted_ids) == 1
    assert await check_invariant(parts, [race.user], race.deleted_ids) == {}


async def test_two_reindexes_of_one_document_both_succeed(parts: Parts) -> None:
    """The issue's reproduction: two concurrent reindexes ended `ready, N chunks, 0 vectors`
    and one caller got a 404."""
    user = new_user()
    async with parts.sessionmaker() as session:
        document, _ = await service(parts, session).save(user, "Twice", paragraphs("twice", 4))

    async def reindex() -> Any:
        async with parts.sessionmaker() as session:
            return await service(parts, session).reindex(user, document.id)

    for _ in range(3):
        await asyncio.gather(reindex(), reindex(), reindex())
        await check_invariant(parts, [user])
    async with parts.sessionmaker() as session:
        assert (await service(parts, session).reads.get(user, document.id)).status == DocumentStatus.READY


async def test_upload_racing_repair_is_not_taken_over(parts: Parts) -> None:
    """Repair with the normal lease never claims a live upload: the upload itself indexes it."""
    user = new_user()

    async def upload(title: str) -> Any:
        async with parts.sessionmaker() as session:
            return await service(parts, session).save(user, title, paragraphs(title, 3))

    async def keep_repairing() -> list[int]:
        return [await repair_interrupted_ingestions(parts) for _ in range(20)]

    *saved, claimed = await asyncio.gather(*(upload(f"live-{i}") for i in range(4)), keep_repairing())
    assert sum(claimed) == 0
    assert all(document.status == DocumentStatus.READY and created for document, created in saved)
    await check_invariant(parts, [user])


async def test_delete_during_ingestion_leaves_no_vectors(parts: Parts) -> None:
    user = new_user()
    title = "Deleted mid-way"

    async def upload() -> BaseException | None:
        async with parts.sessionmaker() as session:
            try:
                await service(parts, session).save(user, title, paragraphs("mid", 8))
            except NotFound as exc:  # the honest outcome when the delete lands first
                return exc
        return None

    uploading = asyncio.ensure_future(upload())

    async def delete() -> str:
        # The upload stores the row before it ends, and only this task removes it.
        document_id = await wait_for_row(parts, user, title, uploading.done)
        assert document_id is not None
        async with parts.sessionmaker() as session:
            await service(parts, session).delete(user, document_id)
        return document_id

    _, document_id = await asyncio.gather(uploading, delete())
    assert await check_invariant(parts, [user], {document_id}) == {}


class DeleteFailsOnce:
    """The real store, except that its first delete fails after really running half of it
    (nothing), as when the store goes away mid-request."""

    def __init__(self, store: Any) -> None:
        self._store, self.failed = store, False

    async def delete(self, where: Any) -> None:
        if not self.failed:
            self.failed = True
            raise ServiceUnavailable("the vector database is unreachable")
        await self._store.delete(where)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_interrupted_delete_is_finished_by_a_retry_or_by_repair(parts: Parts) -> None:
    user = new_user()
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        first, _ = await docs.save(user, "First", paragraphs("first", 3))
        second, _ = await docs.save(user, "Second", paragraphs("second", 3))
        for document in (first, second):
            with pytest.raises(ServiceUnavailable):
                await service(parts, session, vector_store=DeleteFailsOnce(parts.vector_store)).delete(
                    user, document.id)
            assert (await docs.reads.get(user, document.id)).status == DocumentStatus.DELETING
        # Saving the same content while it is being deleted is a clear 409.
        with pytest.raises(Conflict):
            await docs.save(user, "Again", paragraphs("first", 3))
        await docs.delete(user, first.id)  # the client's retry
    # Repair finishes the other one (its `deleting` claim is stale for a repairer whose
    # lease is a millisecond; the service's own lease is longer).
    await asyncio.sleep(0.01)
    assert await repair_interrupted_ingestions(with_lease(parts, 0.001)) == 1
    assert await check_invariant(parts, [user], {first.id, second.id}) == {}


async def test_concurrent_repairs_claim_each_stale_row_once(parts: Parts) -> None:
    """Replicas repairing at once (SKIP LOCKED on Postgres, compare-and-set on SQLite):
    every stale row is claimed by exactly one of them, exactly once."""
    user = new_user()
    async with parts.sessionmaker() as session:
        crashed = [Document(user_id=user, title=f"Crashed {i}", content=paragraphs(f"crashed{i}", 2),
                            content_hash=f"{i:064d}", mime_type="text/plain", metadata_={},
                            status=DocumentStatus.INDEXING, generation=1, claimed_at=None)
                   for i in range(6)]
        session.add_all(crashed)
        await session.commit()
    claimed = await asyncio.gather(*(repair_interrupted_ingestions(parts) for _ in range(3)))
    assert sum(claimed) == len(crashed)
    async with parts.sessionmaker() as session:
        rows = (await session.execute(scoped(select(Document.status, Document.generation),
                                             Access(user), Document))).all()
    assert sorted(rows) == [(DocumentStatus.READY, 2)] * len(crashed)
    await check_invariant(parts, [user])
