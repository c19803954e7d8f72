"""Quotas per owner (documents, characters: a user's personal collections, an organization's
collections) and the per-process ingestion cap, on real SQLite and Postgres with a real
Qdrant Edge store and MiniLM. A document counts against the owner of its collection, whoever
saved it; a move moves the charge; concurrent saves and moves cannot overshoot."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from ingestion_support import SMALL_CHUNKS, Parts, check_invariant, new_user, paragraphs, service, until
from rag_service.documents.quotas import QuotaExceeded
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.errors import ServiceUnavailable
from rag_service.providers.local_embedder import LocalEmbedder
from collections_support import points_of
from rag_service.storage.access import Access, document_points, owner_points, scoped, unscoped
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
                             quota_org_max_documents=2, quota_org_max_characters=10_000, **SMALL_CHUNKS)
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
        usage = (await service(parts, session).reads.summary(user)).usage
    assert (usage.documents, usage.max_documents) == (3, 3)


async def test_character_quota_counts_stored_characters(parts: Parts) -> None:
    user = new_user()
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        first, _ = await docs.save(user, "Big", "a" * 6_000)
        with pytest.raises(QuotaExceeded, match="character quota exceeded.*QUOTA_MAX_CHARACTERS"):
            await docs.save(user, "Too much", "b" * 5_000)
        assert (await docs.reads.summary(user)).usage.characters == 6_000
        # Freed by a delete; a duplicate of stored content costs nothing.
        await docs.delete(user, first.id)
        second, created = await docs.save(user, "Fits now", "b" * 5_000)
        assert created and (await docs.save(user, "Again", "b" * 5_000))[1] is False
        usage = (await docs.reads.summary(user)).usage
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
        assert (await docs.reads.summary(user)).usage.documents == 5


@asynccontextmanager
async def the_only_slot_taken(gate: IngestionGate) -> AsyncIterator[None]:
    """Hold `gate`'s one slot (as a long ingestion would) until the block ends."""
    held, release = asyncio.Event(), asyncio.Event()

    async def occupy() -> None:
        async with gate.slot():
            held.set()
            await release.wait()

    holder = asyncio.create_task(occupy())
    await held.wait()
    try:
        yield
    finally:
        release.set()
        await holder


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
    gate = IngestionGate(1, wait_seconds=30)  # waits long enough that only the release ends it
    async with parts.sessionmaker() as session:
        async with the_only_slot_taken(gate):
            waiting = asyncio.create_task(service(parts, session, gate=gate).save(user, "Later", "it gets its turn"))
            await until(lambda: gate.waiting() == 1, "the save waits for the slot")
        document, created = await waiting
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
    async with the_only_slot_taken(gate):
        # Two saves (the quota is 3 documents) and a move, all waiting for the one slot.
        sessions = [parts.sessionmaker() for _ in range(3)]
        waiting = [asyncio.create_task(service(parts, session, gate=gate).save(user, f"Waits {i}", f"waiting text {i}"))
                   for i, session in enumerate(sessions[:2])]
        waiting.append(asyncio.create_task(service(parts, sessions[2], gate=gate).move(user, document.id,
                                                                                       collection.id)))
        # Until every task waits on the slot (each has read the database first).
        await until(lambda: gate.waiting() == len(waiting), "every save and the move wait for the slot")
        assert not any(task.done() for task in waiting)
        assert parts.engine.sync_engine.pool.checkedout() == 0
    await asyncio.gather(*waiting)
    for session in sessions:
        await session.close()
    assert await rows_of(parts, user) == 3


async def check_owners(parts: Parts, owners: list[str]) -> None:
    """Every row of these owners is `ready` with exactly `chunk_count` points, all carrying its
    owner key, and the owners hold no other point."""
    async with parts.sessionmaker() as session:
        rows = (await session.execute(unscoped(
            select(Document.id, Document.owner, Document.status, Document.chunk_count)
            .where(Document.owner.in_(owners)), "test: every row of the listed owners"))).all()
    for document_id, owner, status, chunk_count in rows:
        assert status == "ready", (document_id, status)
        assert await parts.vector_store.count(document_points(document_id)) == chunk_count
        assert await points_of(parts.vector_store, owner, document_id) == chunk_count
    for owner in owners:
        expected = sum(c for _, o, _, c in rows if o == owner)
        assert await parts.vector_store.count(owner_points(owner)) == expected, owner


async def org_collection(parts: Parts, access: Access, org: str) -> str:
    async with parts.sessionmaker() as session:
        return (await service(parts, session).collections.create(access, f"Team {new_user()}", org)).id


async def test_an_organizations_documents_count_against_the_organization_not_the_uploader(parts: Parts) -> None:
    org = f"org-{new_user()}"
    alice, bob = Access(new_user(), {org: "admin"}), Access(new_user(), {org: "owner"})
    team = await org_collection(parts, alice, org)
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        for i in range(3):  # Alice's personal quota (3), full: the organization's saves do not count
            await docs.save(alice, f"Own {i}", f"alice's own document {i}")
        await docs.save(alice, "Org 1", "organization document one", collection_id=team)
        await docs.save(bob, "Org 2", "organization document two", collection_id=team)
        with pytest.raises(QuotaExceeded, match="the organization's collections hold 2 of 2.*QUOTA_ORG_MAX_DOCUMENTS") as caught:
            await docs.save(alice, "Org 3", "organization document three", collection_id=team)
        assert caught.value.details["owner"] == f"org:{org}"
        usages = {u.owner: (u.documents, u.max_documents) for u in (await docs.reads.summary(alice)).usages}
        assert usages == {alice.user_id: (3, 3), f"org:{org}": (2, 2)}
        assert {u.owner: u.documents for u in (await docs.reads.summary(bob)).usages} == {bob.user_id: 0, f"org:{org}": 2}
        # Bob's personal quota is untouched by what he saved into the organization.
        for i in range(3):
            await docs.save(bob, f"Bob {i}", f"bob's own document {i}")


async def test_a_move_moves_the_charge_and_is_refused_when_the_target_is_full(parts: Parts) -> None:
    org = f"org-{new_user()}"
    alice = Access(new_user(), {org: "admin"})
    team = await org_collection(parts, alice, org)
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        personal = [(await docs.save(alice, f"P{i}", f"personal text number {i}"))[0] for i in range(3)]
        moved = await docs.move(alice, personal[0].id, team)
        assert moved.owner == f"org:{org}" and moved.status == "ready"
        usage = {u.owner: u.documents for u in (await docs.reads.summary(alice)).usages}
        assert usage == {alice.user_id: 2, f"org:{org}": 1}, "the charge moved with the document"
        await docs.save(alice, "P3", "a personal document that fits again")
        await docs.move(alice, personal[1].id, team)
        with pytest.raises(QuotaExceeded, match="QUOTA_ORG_MAX_DOCUMENTS"):
            await docs.move(alice, personal[2].id, team)
        unchanged = await docs.reads.get(alice, personal[2].id)
        assert (unchanged.owner, unchanged.collection_id, unchanged.status) == (alice.user_id, "personal", "ready")
        # Back to the user: the organization is freed, the user is charged (full at 3 -> refused).
        await docs.save(alice, "P4", "another personal document to fill the quota")
        with pytest.raises(QuotaExceeded, match="QUOTA_MAX_DOCUMENTS"):
            await docs.move(alice, personal[0].id, "personal")
        await docs.delete(alice, personal[2].id)
        assert (await docs.move(alice, personal[0].id, "personal")).owner == alice.user_id
        usage = {u.owner: u.documents for u in (await docs.reads.summary(alice)).usages}
        assert usage == {alice.user_id: 3, f"org:{org}": 1}
    await check_owners(parts, [alice.user_id, f"org:{org}"])


async def test_concurrent_saves_and_moves_cannot_overshoot_an_organizations_quota(parts: Parts, database_url) -> None:
    """Members of one organization save and move into it at once (on Postgres each with its own
    in-process gate, as in separate replicas): it ends with exactly its quota of 2."""
    org = f"org-{new_user()}"
    members = [Access(new_user(), {org: "admin"}) for _ in range(4)]
    # Two collections: each has its own lock (storage/locks.py), only the owner's quota lock is shared.
    teams = [await org_collection(parts, members[0], org) for _ in range(2)]
    movable = []
    for member in members:
        async with parts.sessionmaker() as session:
            movable.append((await service(parts, session).save(member, "Mine", f"{member.user_id} moves this"))[0])

    async def attempt(i: int) -> object:
        member = members[i % len(members)]
        gate = IngestionGate(0, 0) if database_url else parts.ingestion_gate
        async with parts.sessionmaker() as session:
            docs = service(parts, session, gate=gate)
            try:
                if i < len(members):
                    return await docs.move(member, movable[i].id, teams[i % 2])
                return await docs.save(member, f"Org {i}", f"organization text {i}", collection_id=teams[i % 2])
            except QuotaExceeded as exc:
                return exc

    results = await asyncio.gather(*(attempt(i) for i in range(8)))
    assert sum(not isinstance(r, QuotaExceeded) for r in results) == 2
    async with parts.sessionmaker() as session:
        in_org = await session.scalar(scoped(select(func.count()).select_from(Document).where(
            Document.owner == f"org:{org}"), members[0], Document))
    assert in_org == 2
    await check_owners(parts, [*(m.user_id for m in members), f"org:{org}"])


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
