"""Helpers of the account events tests: a service of its own on a chosen database and vector
store (SQLite or PostgreSQL with Qdrant Edge, or PostgreSQL with pgvector) reading the stand-in
issuer's feed, data of two users and an organization made over HTTP, and the checks that
nothing in any table or vector store names an id any more."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from collections_support import Caller, caller, create_collection, save
from fixtures_apps import running_app
from rag_service.accounts.consumer import ErasureConsumer
from rag_service.accounts.erasure import Eraser
from rag_service.accounts.feed import FeedClient
from rag_service.auth.membership_changes import MembershipChanges
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.storage.access import owner_points
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.factory import build_vector_store


@dataclass
class Service:
    """One rag-service replica: its app's HTTP client, its runtime and an erasure consumer
    reading `issuer`'s feed (driven by the test: the lifespan does not poll)."""

    client: Any
    runtime: Any
    consumer: ErasureConsumer


@asynccontextmanager
async def service_on(base_runtime: Any, settings: Any, issuer: Any, *, vector_store: Any = None,
                     eraser: Any = None) -> AsyncIterator[Service]:
    """A replica on `settings`' database and vector store, sharing the session's embedder.
    `vector_store`: share another replica's (a server store) instead of opening one."""
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    owns_store = vector_store is None
    if owns_store:
        vector_store = build_vector_store(settings, model_name=base_runtime.embedder.model_name,
                                          dimension=base_runtime.embedder.dimension)
        await vector_store.ensure_collection()
    runtime = dataclasses.replace(base_runtime, settings=settings, engine=engine, sessionmaker=sessionmaker,
                                  vector_store=vector_store, membership_changes=MembershipChanges(),
                                  ingestion_gate=IngestionGate.from_settings(settings))
    feed = FeedClient(issuer.events_url, issuer.events_token, timeout=5)
    consumer = ErasureConsumer(feed, eraser or Eraser(sessionmaker, vector_store, runtime.ingestion_gate),
                               engine, sessionmaker)
    try:
        async with running_app(settings, runtime=runtime) as (_, client):
            yield Service(client, runtime, consumer)
    finally:
        await feed.aclose()
        if owns_store:
            await vector_store.close()
        await engine.dispose()


@dataclass
class World:
    alice: Caller
    bob: Caller
    org: str
    alice_personal: list[str]
    alice_in_org: str
    bob_personal: str
    bob_in_org: str
    team_collection: str


async def populate(client: Any, auth_headers: Any, org: str) -> World:
    """Alice (admin of `org`): two personal documents (one in a collection of her own), a
    collection of the organization she created with a document she saved there, and a chat.
    Bob (admin of `org` too): a personal document, one in the organization's collection, a chat."""
    alice, bob = caller(auth_headers, {org: "admin"}), caller(auth_headers, {org: "admin"})
    own = await create_collection(client, alice, "Alice's drafts")
    team = await create_collection(client, alice, "Team notes", org)
    alice_personal = [
        await save(client, alice, "Tides", f"{alice.id} measures how tidal turbines spin in the northern strait."),
        await save(client, alice, "Kelp", "Kelp forests grow half a metre a day in cold, clear water.", own["id"]),
    ]
    alice_in_org = await save(client, alice, "Team tides", "The team's tidal survey covers forty buoys.", team["id"])
    bob_personal = await save(client, bob, "Bees", "Bees dance to tell the hive where the flowers are.")
    bob_in_org = await save(client, bob, "Team bees", "The team keeps four hives on the roof.", team["id"])
    for who in (alice, bob):
        response = await client.post("/chat", json={"query": "How do tidal turbines spin?", "stream": False},
                                     headers=who.headers)
        assert response.status_code == 200, response.text
    return World(alice, bob, org, alice_personal, alice_in_org, bob_personal, bob_in_org, team["id"])


async def rows_naming(engine: Any, needle: str) -> list[str]:
    """Every `table.column` of the service's database holding `needle` anywhere in its text
    (every column of every table, cast to text: ids, payloads, JSON, vectors' side tables)."""
    found = []
    async with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            tables = (await connection.execute(sa.text(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"))).scalars().all()
            columns = [(table, row[1]) for table in tables
                       for row in (await connection.execute(sa.text(f'PRAGMA table_info("{table}")'))).all()]
        else:
            columns = [tuple(row) for row in (await connection.execute(sa.text(
                "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"))).all()]
        for table, column in columns:
            hits = await connection.scalar(sa.text(
                f'SELECT count(*) FROM "{table}" WHERE CAST("{column}" AS TEXT) LIKE :needle'),
                {"needle": f"%{needle}%"})
            if hits:
                found.append(f"{table}.{column}")
    return found


async def points_carrying(vector_store: Any, owner: str) -> int:
    return await vector_store.count(owner_points(owner))


async def table_counts(engine: Any) -> dict[str, int]:
    tables = ("documents", "collections", "conversations", "messages")
    async with engine.connect() as connection:
        return {t: await connection.scalar(sa.text(f"SELECT count(*) FROM {t}")) for t in tables}
