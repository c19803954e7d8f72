"""Per-user storage quotas and the per-process cap on concurrent ingestions.

Quota check and insert happen in one transaction that first takes a per-user lock: a
Postgres transaction-scoped advisory lock (`pg_advisory_xact_lock`, released by the
commit), so replicas serialize one user's inserts; on SQLite (one process) an asyncio lock
per user. Concurrent uploads therefore cannot overshoot a quota at all; the limit is on
rows, so a document that failed to index still counts until it is deleted.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.config import Settings
from rag_service.errors import PayloadTooLarge, ServiceUnavailable
from rag_service.storage.access import unscoped
from rag_service.storage.models import Document

# First key of the two-key advisory lock (its own key space; "RAGQ").
QUOTA_LOCK_NAMESPACE = 0x52414751


class QuotaExceeded(PayloadTooLarge):
    code = "quota_exceeded"


@dataclass(frozen=True)
class Usage:
    documents: int
    characters: int
    # 0 means unlimited.
    max_documents: int
    max_characters: int


class IngestionGate:
    """At most `concurrency` ingestions at once in this process; more wait up to
    `wait_seconds`, then get 503 `busy` with Retry-After. Also holds the per-user locks."""

    def __init__(self, concurrency: int, wait_seconds: float) -> None:
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self._slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None
        self._user_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestionGate:
        return cls(settings.ingest_concurrency, settings.ingest_queue_timeout_seconds)

    @asynccontextmanager
    async def slot(self, *, bounded: bool = True) -> AsyncIterator[None]:
        """One ingestion slot; `bounded=False` (maintenance) waits as long as it takes."""
        if self._slots is None:
            yield
            return
        try:
            async with asyncio.timeout(self.wait_seconds if bounded else None):
                await self._slots.acquire()
        except TimeoutError:
            retry_after = max(1, math.ceil(self.wait_seconds))
            raise ServiceUnavailable(
                f"{self.concurrency} documents are being indexed already; try again shortly",
                code="busy", headers={"Retry-After": str(retry_after)},
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    @asynccontextmanager
    async def user_lock(self, user_id: str) -> AsyncIterator[None]:
        lock, holders = self._user_locks.get(user_id, (asyncio.Lock(), 0))
        self._user_locks[user_id] = (lock, holders + 1)
        try:
            async with lock:
                yield
        finally:
            lock, holders = self._user_locks[user_id]
            if holders == 1:
                del self._user_locks[user_id]
            else:
                self._user_locks[user_id] = (lock, holders - 1)


async def usage_of(session: AsyncSession, user_id: str, settings: Settings) -> Usage:
    """What `user_id` has saved, in every collection (an organization's included): quotas
    count a user's uploads wherever they went."""
    documents, characters = (await session.execute(unscoped(
        select(func.count(), func.coalesce(func.sum(Document.content_chars), 0)).where(Document.user_id == user_id),
        "quotas count one user's uploads, in collections of every owner",
    ))).one()
    return Usage(int(documents), int(characters), settings.quota_max_documents, settings.quota_max_characters)


async def insert_within_quota(session: AsyncSession, document: Document, settings: Settings,
                              gate: IngestionGate) -> None:
    """Insert and commit `document`, or raise QuotaExceeded (413) and change nothing.

    IntegrityError (the same content inserted concurrently) propagates to the caller.
    """
    async with gate.user_lock(document.user_id):
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(CAST(:namespace AS integer), hashtext(:user_id))"),
                {"namespace": QUOTA_LOCK_NAMESPACE, "user_id": document.user_id},
            )
        usage = await usage_of(session, document.user_id, settings)
        problem = _over_quota(usage, document.content_chars)
        if problem is not None:
            # Commit, not rollback: it only ends the read (and the lock) and, unlike a
            # rollback, leaves the session's other objects loaded.
            await session.commit()
            raise QuotaExceeded(problem, details={
                "documents": usage.documents, "characters": usage.characters,
                "max_documents": usage.max_documents, "max_characters": usage.max_characters,
            })
        session.add(document)
        await session.commit()


def _over_quota(usage: Usage, new_characters: int) -> str | None:
    if usage.max_documents and usage.documents + 1 > usage.max_documents:
        return (f"document quota exceeded: {usage.documents} of {usage.max_documents} documents stored "
                "(QUOTA_MAX_DOCUMENTS); delete some to add more")
    if usage.max_characters and usage.characters + new_characters > usage.max_characters:
        return (f"character quota exceeded: {usage.characters} of {usage.max_characters} characters stored "
                f"and this document has {new_characters} (QUOTA_MAX_CHARACTERS)")
    return None
