"""Locks held for the length of one transaction: an owner's quota lock and a collection's lock.

Each is the process's lock for the key (core/locks.py `KeyedLocks`) and, on Postgres, a
transaction-scoped advisory lock (`pg_advisory_xact_lock`, released by the commit), so
replicas serialize too; SQLite serves one process, where the in-process lock is all it needs.
Commit or roll back inside the block.

- `owner_lock`: quota check and insert (or move) of a document, and erasure of an owner's
  documents (documents/quotas.py, accounts/erasure.py): concurrent uploads cannot overshoot
  a quota, and an addition lands either before an erasure (and is erased) or after it.
- `try_session_lock`: not for a transaction but for a whole step that uses several
  (accounts/consumer.py): held on a connection of its own, taken only if free.
- `collection_lock`: adding a document to a collection checks the collection still exists,
  deleting a collection checks it is empty, each under the collection's lock; so a collection
  is never deleted with a document just added to it (collections/service.py). An owner key
  guards the per-owner collection limit the same way.
- `PostgresAccountSlots`: not a lock but N of them, an account's ingestion slots shared by
  the replicas (core/ingestion_gate.py), each held on a connection for one ingestion.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from rag_service.core.locks import KeyedLocks

# First keys of the two-key advisory locks, one key space each ("RAGQ", "RAGC", "RAGI").
QUOTA_LOCK_NAMESPACE = 0x52414751
COLLECTION_LOCK_NAMESPACE = 0x52414743
INGEST_SLOT_NAMESPACE = 0x52414749


async def _advisory_transaction_lock(session: AsyncSession, namespace: int, key: str) -> None:
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(CAST(:namespace AS integer), hashtext(:key))"),
            {"namespace": namespace, "key": key},
        )


@asynccontextmanager
async def owner_lock(session: AsyncSession, locks: KeyedLocks, owner: str) -> AsyncIterator[None]:
    """Hold `owner`'s quota lock until the session's transaction ends (commit inside the block)."""
    async with locks.hold(owner):
        await _advisory_transaction_lock(session, QUOTA_LOCK_NAMESPACE, owner)
        yield


@asynccontextmanager
async def collection_lock(session: AsyncSession, locks: KeyedLocks, key: str) -> AsyncIterator[None]:
    """Hold the lock named `key` (a collection id, or an owner key for the collection limit)
    until the session's transaction ends; commit or roll back inside the block."""
    async with locks.hold(f"collection:{key}"):
        await _advisory_transaction_lock(session, COLLECTION_LOCK_NAMESPACE, key)
        yield


@asynccontextmanager
async def try_session_lock(engine: AsyncEngine, key: int) -> AsyncIterator[bool]:
    """True when the lock `key` was free and is now held until the block ends (on Postgres a
    session advisory lock on a connection of its own, `pg_try_advisory_lock`); False when
    another process holds it. SQLite serves one process: always True (its caller holds an
    in-process lock already)."""
    if engine.dialect.name != "postgresql":
        yield True
        return
    async with engine.connect() as connection:
        held = bool(await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}))
        await connection.commit()
        try:
            yield held
        finally:
            if held:
                await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                await connection.commit()


class PostgresAccountSlots:
    """An account's ingestion slots shared by every replica (core/ingestion_gate.py
    `SharedAccountSlots`): slot `n` of an account is the session advisory lock
    (INGEST_SLOT_NAMESPACE, hashtext('<account>#<n>')), held on a connection of its own for
    the whole ingestion. Postgres releases it when that connection ends, so a crashed or
    cut-off replica frees its slots by itself; nothing to clean up, no table."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def try_claim(self, account: str, slots: int) -> PostgresHeldSlot | None:
        connection = await self._engine.connect()
        try:
            for slot in range(slots):
                held = await connection.scalar(
                    text("SELECT pg_try_advisory_lock(CAST(:namespace AS integer), hashtext(:key))"),
                    {"namespace": INGEST_SLOT_NAMESPACE, "key": f"{account}#{slot}"},
                )
                if held:
                    await connection.commit()  # session locks outlive it; no idle transaction
                    return PostgresHeldSlot(connection, f"{account}#{slot}")
        except BaseException:
            # Possibly holding a lock taken just before the failure: a pooled connection
            # would keep it, so the connection is discarded (which releases it).
            await connection.invalidate()
            await connection.close()
            raise
        await connection.close()
        return None


class PostgresHeldSlot:
    def __init__(self, connection: AsyncConnection, key: str) -> None:
        self._connection = connection
        self._key = key

    async def release(self) -> None:
        try:
            await self._connection.execute(
                text("SELECT pg_advisory_unlock(CAST(:namespace AS integer), hashtext(:key))"),
                {"namespace": INGEST_SLOT_NAMESPACE, "key": self._key},
            )
            await self._connection.commit()
        except BaseException:
            # Connection lost (its lock went with it) or the release interrupted: never
            # return a connection that may still hold the lock to the pool.
            await self._connection.invalidate()
            raise
        finally:
            await self._connection.close()


def shared_account_slots(engine: AsyncEngine, single_process: bool) -> PostgresAccountSlots | None:
    """The replicas' shared ingestion slots where there can be several replicas (a Postgres
    database and a vector store that is not single-process); None (the in-process gate is
    all) on SQLite or with a single-process vector store."""
    if engine.dialect.name != "postgresql" or single_process:
        return None
    return PostgresAccountSlots(engine)
