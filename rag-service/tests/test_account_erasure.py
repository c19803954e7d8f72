"""Erasure from the account events feed (accounts/erasure.py, accounts/consumer.py), on real
SQLite and PostgreSQL with Qdrant Edge, and on PostgreSQL with pgvector, the feed served over
HTTP by the stand-in issuer:

- `user.deleted` erases the user's collections, documents, vectors and conversations; the
  documents the user saved into an organization's collection stay the organization's, and
  afterwards no column of any table and no vector names the user;
- `organization.deleted` erases everything owned by `org:<id>`;
- each event is applied once, a replay of the whole feed changes nothing, the cursor lives in
  the service's database (a service stopped during a deletion erases at its next start);
- two replicas on one PostgreSQL apply one event without conflict;
- 401 and 410 from the feed;
- an ingestion run racing the erasure leaves no vector behind (the claim protocol);
- the sweep erases what a request of the deleted account wrote after the erasure, once every
  token of the account has expired.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from qdrant_client import AsyncQdrantClient

from account_events_support import Service, World, points_carrying, populate, rows_naming, service_on, table_counts
from collections_support import caller, new_org, points_of
from fixtures_apps import running_app, settings_for
from fixtures_issuer import JwksIssuer
from ingestion_support import SMALL_CHUNKS, Parts, paragraphs, service
from rag_service.accounts.consumer import ErasureConsumer, StepResult
from rag_service.accounts.erasure import Eraser
from rag_service.accounts.feed import FeedRefused
from rag_service.errors import NotFound
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.access import Access, document_points, org_owner

APPLIED = "SELECT applied FROM account_events_cursor WHERE consumer = 'erasure'"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
            pytest.param("pgvector", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, isolated_issuer: JwksIssuer, tmp_path: Any) -> Any:
    """Settings of a service of the test's own: its own database (and Qdrant Edge data dir,
    or pgvector tables), tokens from the shared issuer, the feed of `isolated_issuer`; the
    lifespan does not poll (the test drives the consumer)."""
    issuer = request.getfixturevalue("issuer")
    values: dict[str, Any] = {"account_events_poll_seconds": 0, "auth_events_url": isolated_issuer.events_url,
                              "account_events_token": isolated_issuer.events_token}
    if request.param == "postgres":
        values["database_url"] = request.getfixturevalue("make_postgres_database")()
    elif request.param == "pgvector":
        values["database_url"] = request.getfixturevalue("make_pgvector_database")()
        values["vector_store"] = "pgvector"
    return settings_for(issuer, tmp_path, **values)


@pytest.fixture
async def replica(runtime: Any, backend_settings: Any, isolated_issuer: JwksIssuer) -> Any:
    async with service_on(runtime, backend_settings, isolated_issuer) as svc:
        yield svc


async def stored_cursor(engine: Any) -> str | None:
    async with engine.connect() as connection:
        return await connection.scalar(sa.text("SELECT cursor FROM account_events_cursor WHERE consumer = 'erasure'"))


async def visible(client: Any, who: Any) -> set[str]:
    response = await client.get("/documents", params={"limit": 100}, headers=who.headers)
    assert response.status_code == 200, response.text
    return {d["id"] for d in response.json()["documents"]}


async def assert_alice_erased(svc: Service, world: World) -> None:
    runtime = svc.runtime
    assert await rows_naming(runtime.engine, world.alice.id) == []
    assert await points_carrying(runtime.vector_store, world.alice.id) == 0
    for document_id in world.alice_personal:
        assert await runtime.vector_store.count(document_points(document_id)) == 0
    # Bob (and the organization) keep everything, Alice's saves into the organization included.
    assert await visible(svc.client, world.bob) == {world.bob_personal, world.bob_in_org, world.alice_in_org}
    for document_id in (world.bob_in_org, world.alice_in_org):
        response = await svc.client.get(f"/documents/{document_id}", headers=world.bob.headers)
        assert response.json()["status"] == "ready"
        assert await points_of(runtime.vector_store, org_owner(world.org), document_id) == response.json()["chunk_count"]
    history = (await svc.client.get("/history", headers=world.bob.headers)).json()
    assert history["total"] == 1
    collections = (await svc.client.get("/collections", headers=world.bob.headers)).json()["collections"]
    assert world.team_collection in {c["id"] for c in collections}


async def test_a_deleted_user_is_erased_once_and_a_replay_changes_nothing(
        replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    await erase_once_and_replay(replica, isolated_issuer, auth_headers)


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")
async def test_erasure_through_the_qdrant_server_adapter(
        runtime: Any, make_settings: Any, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    """The same with the Qdrant server adapter (VECTOR_STORE=qdrant), on qdrant-client's local
    mode: it takes the server API's calls, filters included (no Qdrant server runs here)."""
    settings = make_settings(account_events_poll_seconds=0, auth_events_url=isolated_issuer.events_url,
                             account_events_token=isolated_issuer.events_token)
    store = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="erasure",
                              dimension=runtime.embedder.dimension)
    await store.ensure_collection()
    try:
        async with service_on(runtime, settings, isolated_issuer, vector_store=store) as replica:
            await erase_once_and_replay(replica, isolated_issuer, auth_headers)
    finally:
        await store.close()


async def erase_once_and_replay(replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    world = await populate(replica.client, auth_headers, new_org())
    assert await rows_naming(replica.runtime.engine, world.alice.id), "the check finds the id before erasure"
    assert await points_carrying(replica.runtime.vector_store, world.alice.id) > 0
    isolated_issuer.emit("member.removed", user_id=world.alice.id, organization_id=world.org)
    isolated_issuer.emit("user.deleted", user_id=world.alice.id)

    assert await replica.consumer.step() == StepResult(applied=2)
    await assert_alice_erased(replica, world)
    assert await replica.consumer.cursor() == isolated_issuer.events[-1]["cursor"]
    after = await table_counts(replica.runtime.engine)

    assert await replica.consumer.step() == StepResult(applied=0), "each event is applied once"
    # The whole feed again (as after a 410): nothing changes.
    async with replica.runtime.engine.begin() as connection:
        await connection.execute(sa.text("UPDATE account_events_cursor SET cursor = NULL WHERE consumer = 'erasure'"))
    assert await replica.consumer.step() == StepResult(applied=2)
    assert await table_counts(replica.runtime.engine) == after
    await assert_alice_erased(replica, world)


async def test_a_deleted_organization_is_erased_and_its_members_keep_their_own(
        replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    world = await populate(replica.client, auth_headers, new_org())
    other_org = new_org()
    carol = caller(auth_headers, {other_org: "owner"})
    response = await replica.client.post("/collections", json={"name": "Other", "organization_id": other_org},
                                         headers=carol.headers)
    kept_collection = response.json()["id"]
    response = await replica.client.post("/save-document", headers=carol.headers, json={
        "title": "Other", "content": "Another organization's note about lighthouses.", "collection_id": kept_collection})
    kept = response.json()["document_id"]
    isolated_issuer.emit("organization.deleted", organization_id=world.org)

    assert await replica.consumer.step() == StepResult(applied=1)
    owner = org_owner(world.org)
    assert await rows_naming(replica.runtime.engine, owner) == []
    assert await points_carrying(replica.runtime.vector_store, owner) == 0
    assert await visible(replica.client, world.alice) == set(world.alice_personal)
    assert await visible(replica.client, world.bob) == {world.bob_personal}
    assert await visible(replica.client, carol) == {kept}
    assert await points_carrying(replica.runtime.vector_store, org_owner(other_org)) > 0
    assert await replica.consumer.step() == StepResult(applied=0)


async def test_a_service_stopped_during_a_deletion_erases_it_at_its_next_start(
        runtime: Any, backend_settings: Any, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    """Down: the events queue at the auth-service. The real lifespan of the restarted
    service reads from the cursor stored in its database and erases at once."""
    async with service_on(runtime, backend_settings, isolated_issuer) as first:
        world = await populate(first.client, auth_headers, new_org())
        isolated_issuer.emit("member.removed", user_id=world.bob.id, organization_id=world.org)
        assert await first.consumer.step() == StepResult(applied=1)
    # Stopped. Meanwhile Alice deletes her account (and another event queues behind it).
    isolated_issuer.emit("user.deleted", user_id=world.alice.id)
    isolated_issuer.emit("member.role_changed", user_id=world.bob.id, organization_id=world.org, role="member")

    restarted = backend_settings.model_copy(update={"account_events_poll_seconds": 30})
    async with running_app(restarted) as (app, client):
        runtime_after = app.state.runtime
        # The start-up poll runs at once; the next is 30 s away. Wait for the cursor to move.
        for _ in range(600):
            if await stored_cursor(runtime_after.engine) == isolated_issuer.events[-1]["cursor"]:
                break
            await asyncio.sleep(0.05)
        assert await stored_cursor(runtime_after.engine) == isolated_issuer.events[-1]["cursor"]
        # Bob's membership events reached this replica's staleness signal too: he mints anew.
        world.bob.headers = auth_headers(world.bob.id, orgs=[{"id": world.org, "role": "admin"}],
                                         iat=int(time.time()) + 1)
        assert (await client.get("/me", headers=world.bob.headers)).status_code == 200
        await assert_alice_erased(Service(client, runtime_after, None), world)
        async with runtime_after.engine.connect() as connection:
            assert await connection.scalar(sa.text(APPLIED)) == 3


@pytest.mark.postgres
async def test_two_replicas_apply_one_event_without_conflict(
        runtime: Any, make_postgres_database: Any, isolated_issuer: JwksIssuer, issuer: JwksIssuer,
        auth_headers: Any, tmp_path: Any) -> None:
    """Two replicas (own engines, gates and consumers) on one PostgreSQL and one vector store.
    The first holds the consumer lock, stopped inside the erasure; the second's step skips.
    Then both step at once, again: the event was applied once, by one of them."""
    settings = settings_for(issuer, tmp_path, database_url=make_postgres_database(), account_events_poll_seconds=0,
                            auth_events_url=isolated_issuer.events_url,
                            account_events_token=isolated_issuer.events_token)
    entered, release = asyncio.Event(), asyncio.Event()
    erasures: list[str] = []

    class HeldEraser(Eraser):
        async def erase_user(self, user_id: str) -> Any:
            erasures.append(user_id)
            entered.set()
            await release.wait()
            return await super().erase_user(user_id)

    async with service_on(runtime, settings, isolated_issuer) as first:
        held = HeldEraser(first.runtime.sessionmaker, first.runtime.vector_store, first.runtime.ingestion_gate)
        async with service_on(runtime, settings, isolated_issuer, vector_store=first.runtime.vector_store,
                              eraser=held) as second:
            world = await populate(first.client, auth_headers, new_org())
            isolated_issuer.emit("user.deleted", user_id=world.alice.id)
            holding = asyncio.create_task(second.consumer.step())
            await entered.wait()
            assert await first.consumer.step() == StepResult(skipped=True)
            release.set()
            assert await holding == StepResult(applied=1)
            # At once: one may find the other holding the lock (skipped); neither applies anything.
            results = await asyncio.gather(first.consumer.step(), second.consumer.step())
            assert [r.applied for r in results] == [0, 0]
            assert erasures == [world.alice.id]
            await assert_alice_erased(first, world)
            async with first.runtime.engine.connect() as connection:
                assert await connection.scalar(sa.text(APPLIED)) == 1


async def test_the_cursor_is_a_compare_and_set_when_two_consumers_race(
        replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    """Two consumers of one database that do not share a lock (what the advisory lock's
    connection dropping would leave): both may apply (erasure is idempotent), but the cursor
    moves once per event and the counter says each event once."""
    world = await populate(replica.client, auth_headers, new_org())
    isolated_issuer.emit("user.deleted", user_id=world.alice.id)
    other = ErasureConsumer(replica.consumer.feed, Eraser(replica.runtime.sessionmaker, replica.runtime.vector_store),
                            replica.runtime.engine, replica.runtime.sessionmaker)
    results = await asyncio.gather(replica.consumer.step(), other.step())
    assert sum(r.applied for r in results) == 1
    async with replica.runtime.engine.connect() as connection:
        assert await connection.scalar(sa.text(APPLIED)) == 1
    await assert_alice_erased(replica, world)


async def test_401_keeps_the_cursor_and_410_restarts_from_the_oldest_event(
        replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any, caplog: pytest.LogCaptureFixture) -> None:
    world = await populate(replica.client, auth_headers, new_org())
    gone = new_org()
    isolated_issuer.emit("organization.deleted", organization_id=gone)
    assert await replica.consumer.step() == StepResult(applied=1)
    seen = await replica.consumer.cursor()

    token, isolated_issuer.events_token = isolated_issuer.events_token, "y" * 40
    with pytest.raises(FeedRefused):
        await replica.consumer.step()
    assert await replica.consumer.cursor() == seen
    isolated_issuer.events_token = token

    # Down for longer than the retention: the events after our cursor were pruned unread.
    isolated_issuer.emit("member.removed", user_id=world.bob.id, organization_id=world.org)
    isolated_issuer.emit("user.deleted", user_id=world.alice.id)
    isolated_issuer.prune(keep_last=1)
    caplog.set_level(logging.ERROR, logger="rag_service.accounts.consumer")
    assert await replica.consumer.step() == StepResult(applied=1)
    assert "older than the oldest event" in caplog.text
    assert world.alice.id not in caplog.text
    assert await replica.consumer.cursor() == isolated_issuer.events[-1]["cursor"]
    await assert_alice_erased(replica, world)


class HeldEmbedder:
    """The real embedder, stopped before its `stop_at`-th call until released."""

    def __init__(self, embedder: Any, stop_at: int) -> None:
        self._embedder = embedder
        self.model_name, self.dimension = embedder.model_name, embedder.dimension
        self.calls, self.stop_at = 0, stop_at
        self.reached, self.release = asyncio.Event(), asyncio.Event()

    async def embed(self, texts: list[str], task: str = "document") -> list[list[float]]:
        self.calls += 1
        if self.calls == self.stop_at:
            self.reached.set()
            await self.release.wait()
        return await self._embedder.embed(texts, task=task)

    def count_tokens(self, text: str) -> int:
        return self._embedder.count_tokens(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


@pytest.mark.parametrize("organization", [False, True], ids=["personal", "organization"])
async def test_an_ingestion_racing_the_erasure_leaves_no_vector(
        replica: Service, isolated_issuer: JwksIssuer, organization: bool) -> None:
    """A save stopped after writing its first batch of vectors; the owner is erased; the run
    goes on, finds its claim lost and the row gone, removes its partial vectors and reports
    the document deleted (claims.py). Afterwards nothing of it exists."""
    runtime = replica.runtime
    settings = runtime.settings.model_copy(update=SMALL_CHUNKS)
    user, org = f"user-{uuid.uuid4().hex[:10]}", new_org()
    held = HeldEmbedder(runtime.embedder, stop_at=3)
    parts = Parts(settings, runtime.engine, runtime.sessionmaker, runtime.vector_store, runtime.sparse_encoder, held,
                  runtime.ingestion_gate)
    access = Access(user, {org: "admin"})
    collection = "personal"
    if organization:
        async with runtime.sessionmaker() as session:
            collection = (await service(parts, session).collections.create(access, "Race", org)).id

    async def save() -> Any:
        async with runtime.sessionmaker() as session:
            return await service(parts, session).save(access, "Racing", paragraphs("erase", 6), collection_id=collection)

    saving = asyncio.create_task(save())
    await held.reached.wait()
    owner = org_owner(org) if organization else user
    assert await points_carrying(runtime.vector_store, owner) >= 1, "the run's first batches are stored"
    isolated_issuer.emit("organization.deleted" if organization else "user.deleted",
                         **({"organization_id": org} if organization else {"user_id": user}))
    assert await replica.consumer.step() == StepResult(applied=1)
    held.release.set()
    with pytest.raises(NotFound, match="deleted while it was being indexed"):
        await saving
    assert await points_carrying(runtime.vector_store, owner) == 0
    assert await rows_naming(runtime.engine, owner) == []


async def test_the_sweep_erases_what_came_late_once_every_token_has_expired(
        replica: Service, isolated_issuer: JwksIssuer, auth_headers: Any) -> None:
    """A request authenticated before the deletion was known writes after the erasure (here:
    a save and a chat turn with Alice's old token, as a replica that has not read the event
    yet would accept). The sweep, a consumer with its own cursor, applies the deletion again
    once ACCESS_TOKEN_MAX_AGE_SECONDS have passed since it occurred, and not before."""
    world = await populate(replica.client, auth_headers, new_org())
    event = isolated_issuer.emit("user.deleted", user_id=world.alice.id)
    assert await replica.consumer.step() == StepResult(applied=1)
    late = await replica.client.post("/save-document", headers=world.alice.headers,
                                     json={"title": "Late", "content": "Written after the erasure, by an old token."})
    assert late.status_code == 201, late.text
    chat = await replica.client.post("/chat", json={"query": "What was written late?", "stream": False},
                                     headers=world.alice.headers)
    assert chat.status_code == 200, chat.text
    assert await rows_naming(replica.runtime.engine, world.alice.id)

    settle = replica.runtime.settings.access_token_max_age_seconds
    now = [event["occurred_at"] / 1000 + settle - 1]
    sweep = ErasureConsumer(replica.consumer.feed, Eraser(replica.runtime.sessionmaker, replica.runtime.vector_store),
                            replica.runtime.engine, replica.runtime.sessionmaker, name="erasure-sweep",
                            settle_seconds=settle, clock=lambda: now[0])
    assert await sweep.step() == StepResult(applied=0), "a token of the account may still be alive"
    assert await sweep.cursor() is None
    now[0] += 1
    assert await sweep.step() == StepResult(applied=1)
    assert await sweep.cursor() == event["cursor"]
    await assert_alice_erased(replica, world)
