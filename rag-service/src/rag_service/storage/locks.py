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
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from rag_service.core.locks import KeyedLocks

# First keys of the two-key advisory locks, one key space each ("RAGQ", "RAGC").
QUOTA_LOCK_NAMESPACE = 0x52414751
COLLECTION_LOCK_NAMESPACE = 0x52414743


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
