"""Collections under concurrency, on real SQLite and PostgreSQL, each race followed by its
invariant:

- deleting a collection while documents are saved and moved into it: afterwards the collection
  exists and holds every document that was created or moved in, or it is gone and no document row
  names it (storage/locks.py). On PostgreSQL half the saves go through a second app
  on the same database (a replica: only the advisory lock is shared);
- creating one name many times at once: exactly one 201, the rest 409 `collection_exists`;
- moves between a personal and an organization's collection racing deletes, reindexes and
  a repairer that steals claims (race_rounds.py's harshest form): every ready document has
  exactly `chunk_count` points, all under the row's owner key and collection, none under
  the other owner, and no point outlives its row.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import delete, select, text

from collection_moves_support import MoveRound
from collections_support import caller, create_collection, new_org, points_of
from fixtures_apps import running_app
from ingestion_support import SMALL_CHUNKS, Parts, paragraphs, repair_interrupted_ingestions, service, until
from rag_service.storage.locks import collection_lock
from rag_service.documents import claims
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.errors import NotFound
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.storage.access import Access, scoped, unscoped
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.models import Collection, Document, DocumentStatus
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from security_support import assert_json_error, new_user

DELETE_ROUNDS = 12
SAVES_PER_ROUND = 4
CREATE_ROUNDS = 5
CREATES_PER_ROUND = 6
MOVE_ROUNDS = 3


@pytest_asyncio.fixture
async def replicas(db_client: Any, db_app: Any, db_settings: Any) -> AsyncIterator[list[Any]]:
    """Clients of the apps sharing the test database: one on SQLite (a single process by
    design), two on PostgreSQL. The second is a replica: its own connection pool and
    in-process locks (ingestion gate), the same database and vector store."""
    if db_settings.database_url is None:
        yield [db_client]
        return
    engine, sessionmaker = create_engine_and_sessionmaker(db_settings)
    replica = dataclasses.replace(db_app.state.runtime, engine=engine, sessionmaker=sessionmaker,
                                  ingestion_gate=IngestionGate.from_settings(db_settings))
    try:
        async with running_app(db_settings, runtime=replica) as (_, second):
            yield [db_client, second]
    finally:
        await engine.dispose()


async def rows_in_collection(db_app: Any, collection_id: str) -> set[str]:
    async with db_app.state.runtime.sessionmaker() as session:
        return set((await session.scalars(unscoped(
            select(Document.id).where(Document.collection_id == collection_id),
            "test: a collection's rows, whatever their owner"))).all())


async def timed_save(client: Any, who: Any) -> float:
    """The slowest of three saves into `who`'s default collection, in seconds."""
    durations = []
    for i in range(3):
        started = time.perf_counter()
        response = await client.post("/save-document", json={"title": "t", "content": f"Timing {i} {new_user()}."},
                                     headers=who.headers)
        assert response.status_code == 201, response.text
        durations.append(time.perf_counter() - started)
    return max(durations)


@pytest.mark.parametrize("organization", [False, True], ids=["personal", "organization"])
async def test_deleting_a_collection_while_saving_into_it(db_app, replicas, auth_headers, organization):
    org = new_org()
    admin = caller(auth_headers, {org: "admin"})
    rng = random.Random(17)
    outcomes = {"kept": 0, "deleted": 0}
    # The delete's start relative to the saves' sweeps from well before to well after them
    # (a save's duration on this machine, not a guess), so rounds race it against every step.
    save_seconds = await timed_save(replicas[0], admin)
    for round_ in range(DELETE_ROUNDS):
        collection = (await create_collection(replicas[0], admin, f"Round {round_}",
                                              org if organization else None))["id"]
        offset = (2 * round_ / (DELETE_ROUNDS - 1) - 1) * 1.5 * save_seconds
        # A document moved in races the delete too (one more way to add to a collection).
        mover = await replicas[0].post("/save-document", headers=admin.headers, json={
            "title": f"mover {round_}", "content": f"Round {round_}: the wombat moves house."})
        moving = mover.json()["document_id"]

        async def move_in() -> Any:
            await asyncio.sleep(max(0.0, -offset) + rng.random() * 0.02)
            return await replicas[0].post(f"/documents/{moving}/move", json={"collection_id": collection},
                                           headers=admin.headers)

        async def save(i: int) -> Any:
            await asyncio.sleep(max(0.0, -offset) + rng.random() * 0.02)
            body = {"title": f"r{round_}-{i}", "content": f"Round {round_} item {i}: lemurs {i * 3} sunbathing.",
                    "collection_id": collection}
            return await replicas[i % len(replicas)].post("/save-document", json=body, headers=admin.headers)

        async def delete() -> Any:
            await asyncio.sleep(max(0.0, offset) + rng.random() * 0.02)
            return await replicas[round_ % len(replicas)].delete(f"/collections/{collection}", headers=admin.headers)

        deleted, moved, *saves = await asyncio.gather(delete(), move_in(),
                                                      *(save(i) for i in range(SAVES_PER_ROUND)))
        created = set()
        if moved.status_code == 200:
            created.add(moving)
        else:
            assert_json_error(moved, 404)
            home = await replicas[0].get(f"/documents/{moving}", headers=admin.headers)
            assert home.json()["collection_id"] == "personal", home.text
        for response in saves:
            if response.status_code == 201:
                created.add(response.json()["document_id"])
            else:
                assert_json_error(response, 404)  # the collection was gone by then
        exists = (await replicas[0].get(f"/collections/{collection}", headers=admin.headers)).status_code
        rows = await rows_in_collection(db_app, collection)
        if deleted.status_code == 204:
            assert exists == 404 and rows == set() and created == set(), (round_, rows, created)
            outcomes["deleted"] += 1
        else:
            assert assert_json_error(deleted, 409)["code"] == "collection_not_empty"
            assert exists == 200 and rows == created and created, (round_, rows, created)
            outcomes["kept"] += 1
    # Both outcomes happened (the sweep starts with the delete first and ends with it last).
    assert outcomes["kept"] and outcomes["deleted"], outcomes


async def someone_else_waits_for(runtime: Any, collection: str) -> bool:
    """Whether another request waits for `collection`'s lock: on PostgreSQL its replica waits
    for the advisory lock (an ungranted lock in pg_locks), on SQLite for the in-process one."""
    if runtime.engine.dialect.name != "postgresql":
        return runtime.ingestion_gate.locks.holders(f"collection:{collection}") > 1
    async with runtime.sessionmaker() as session:
        return bool(await session.scalar(text(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")))


async def test_a_save_waits_for_a_replica_deleting_its_collection(db_app, replicas, auth_headers):
    """Deterministic form of the race above: while one process holds a collection's lock
    (mid-delete), a save into it through another replica (PostgreSQL: another connection
    pool and gate, so only the advisory lock can hold it off) waits, then finds it gone."""
    admin = caller(auth_headers)
    collection = (await create_collection(replicas[-1], admin, "Held"))["id"]
    runtime = db_app.state.runtime
    async with runtime.sessionmaker() as session:
        async with collection_lock(session, runtime.ingestion_gate.locks, collection):
            saving = asyncio.ensure_future(replicas[-1].post("/save-document", headers=admin.headers, json={
                "title": "Late", "content": "Saved while its collection was being deleted.",
                "collection_id": collection}))
            await until(lambda: someone_else_waits_for(runtime, collection), "the save waits for the lock")
            assert not saving.done()
            await session.execute(scoped(delete(Collection).where(Collection.id == collection),
                                         Access(admin.id), Collection, write=True))
            await session.commit()
    assert_json_error(await saving, 404)
    assert await rows_in_collection(db_app, collection) == set()


async def test_creating_one_name_concurrently_makes_one_collection(replicas, auth_headers):
    org = new_org()
    admins = [caller(auth_headers, {org: "admin"}), caller(auth_headers, {org: "owner"})]
    for round_ in range(CREATE_ROUNDS):
        for org_id, who in ((None, [caller(auth_headers)]), (org, admins)):
            body = {"name": f"Shared {round_}", **({"organization_id": org_id} if org_id else {})}
            responses = await asyncio.gather(*(
                replicas[i % len(replicas)].post("/collections", json=body, headers=who[i % len(who)].headers)
                for i in range(CREATES_PER_ROUND)))
            statuses = sorted(response.status_code for response in responses)
            assert statuses == [201] + [409] * (CREATES_PER_ROUND - 1), [r.text for r in responses]
            for response in responses:
                if response.status_code == 409:
                    assert response.json()["error"]["code"] == "collection_exists"
            named = [c for c in (await replicas[0].get("/collections", headers=who[0].headers)).json()["collections"]
                     if c["name"] == body["name"]]
            assert len(named) == 1


# --- moves racing deletes, reindexes and repair ----------------------------------------------


@pytest.fixture(scope="session")
def embedder(settings) -> LocalEmbedder:
    return LocalEmbedder(settings)


@pytest_asyncio.fixture
async def parts(own_database_url, make_settings, embedder, tmp_path) -> AsyncIterator[Parts]:
    settings = make_settings(database_url=own_database_url, **SMALL_CHUNKS)
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(tmp_path / "qdrant", collection="moves", dimension=embedder.dimension)
    await store.ensure_collection()
    yield Parts(settings, engine, sessionmaker, store, SparseEncoder(), embedder)
    await store.close()
    await engine.dispose()


async def test_moves_racing_deletes_reindexes_and_repair_keep_points_with_their_owner(parts):
    for seed in range(MOVE_ROUNDS):
        race = MoveRound(parts, seed)
        await race.prepare()
        await race.run()
        assert race.unexpected_errors() == [], f"round {seed}"
        await race.check_invariant()
    assert await repair_interrupted_ingestions(parts) == 0


async def test_a_claim_taken_over_before_its_run_starts_is_not_a_404(parts):
    """The interleaving the round above hit now and then: a move (or reindex) claims the row,
    another claim takes it over before the first run reads it. While resume looked the row
    up by the claim's generation, the first caller got 404 "document not found" for a live
    document; it gets the row as it stands (its run finds out from its generation)."""
    access = Access(new_user(), {new_org(): "admin"})
    async with parts.sessionmaker() as session:
        docs = service(parts, session)
        document, _ = await docs.save(access, "Taken over", paragraphs("takenover", 3))
        first = await claims.claim_for_reindex(session, access, document.id)
        second = await claims.claim_for_reindex(session, access, document.id)
        assert first is not None and second == first + 1
        superseded = await docs.resume(document.id, first)  # the first run, after the takeover
        assert superseded.id == document.id and superseded.generation == second
        finished = await docs.resume(document.id, second)
        assert finished.status == DocumentStatus.READY and finished.generation == second
        await docs.delete(access, document.id)
        with pytest.raises(NotFound):
            await docs.resume(document.id, second)
    assert await points_of(parts.vector_store, access.user_id, document.id) == 0
