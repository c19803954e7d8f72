"""The lock held while documents are added to a collection, and while it is deleted.

Adding a document (a save, an upload, a move) checks that its collection still exists and
inserts in one transaction holding the collection's lock; deleting a collection checks that
it is empty and deletes it holding the same lock. So a collection is never deleted with a
document just added to it. On Postgres the lock is a transaction-scoped advisory lock
(released by the commit), so replicas serialize too; in one process an asyncio lock per key
(the ingestion gate's) comes first, which is all SQLite (one process) needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.documents.quotas import IngestionGate

# First key of the two-key advisory lock (its own key space; "RAGC").
COLLECTION_LOCK_NAMESPACE = 0x52414743


@asynccontextmanager
async def collection_lock(session: AsyncSession, gate: IngestionGate, key: str) -> AsyncIterator[None]:
    """Hold the lock named `key` (a collection id, or an owner key for the collection limit)
    until the session's transaction ends; commit or roll back inside the block."""
    async with gate.user_lock(f"collection:{key}"):
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(CAST(:namespace AS integer), hashtext(:key))"),
                {"namespace": COLLECTION_LOCK_NAMESPACE, "key": key},
            )
        yield
