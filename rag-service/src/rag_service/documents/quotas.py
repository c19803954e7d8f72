"""Storage quotas per owner and the per-process cap on concurrent ingestions.

A document counts against the owner of its collection (storage/access.py): the user for a
personal collection (QUOTA_MAX_*), the organization for an organization's collection
(QUOTA_ORG_MAX_*), whoever saved it. A move moves the charge: it is checked against the
target owner's quota like a save.

Quota check and insert (or move) happen in one transaction that first takes the owner's
lock (`owner_lock`): a Postgres transaction-scoped advisory lock (`pg_advisory_xact_lock`,
released by the commit), so replicas serialize one owner's additions; on SQLite (one
process) an asyncio lock per owner. Concurrent uploads therefore cannot overshoot a quota
at all; the limit is on rows, so a document that failed to index still counts until it is
deleted. Erasure (accounts/erasure.py) takes the same lock, so an addition either lands
before it (and is erased) or after it.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.config import Settings
from rag_service.errors import PayloadTooLarge, ServiceUnavailable
from rag_service.storage.access import org_of, unscoped
from rag_service.storage.models import Document

# First key of the two-key advisory lock (its own key space; "RAGQ").
QUOTA_LOCK_NAMESPACE = 0x52414751


class QuotaExceeded(PayloadTooLarge):
    code = "quota_exceeded"


@dataclass(eq=False)
class _SlotWaiter:
    account: str
    cost: int
    arrival: int
    granted: asyncio.Future[None]


def estimated_chunks(characters: int, settings: Settings) -> int:
    """What indexing a text will cost, in chunks (about 4 characters per token)."""
    return max(1, math.ceil(characters / (4 * max(1, settings.chunk_size_tokens))))


@dataclass(frozen=True)
class Usage:
    owner: str
    documents: int
    characters: int
    # 0 means unlimited.
    max_documents: int
    max_characters: int


class IngestionGate:
    """At most `concurrency` ingestions at once in this process, shared fairly between
    accounts; more wait up to `wait_seconds`, then get 503 `busy` with Retry-After. Also
    holds the in-process locks per key (owners, collections).

    Fair share: one account holds at most `per_account` slots (default half of them,
    rounded up), so while one account floods, the other slots stay free for everyone else;
    a freed slot goes to the waiting account with the least indexing in flight, measured in
    estimated chunks (what indexing costs: the text after extraction, not the upload's
    bytes), then to the earliest. The encoder shares its lanes per account the same way
    (encoder_worker.py), so a small document of another account is indexed within about
    one encoder sub-batch per lane.
    """

    def __init__(self, concurrency: int, wait_seconds: float, per_account: int | None = None) -> None:
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        half = max(1, (concurrency + 1) // 2)
        self.per_account = max(1, min(concurrency, per_account or half)) if concurrency > 0 else 0
        self._in_use = 0
        self._held: dict[str, int] = {}
        self._cost: dict[str, int] = {}
        self._waiters: list[_SlotWaiter] = []
        self._arrivals = itertools.count()
        self._user_locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> IngestionGate:
        return cls(settings.ingest_concurrency, settings.ingest_queue_timeout_seconds,
                   settings.ingest_concurrency_per_account or None)

    def in_flight(self, account: str) -> int:
        """Slots `account` holds now."""
        return self._held.get(account, 0)

    def waiting(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self, account: str = "", *, cost: int = 1, bounded: bool = True) -> AsyncIterator[None]:
        """One ingestion slot for `account` (estimated `cost` in chunks); `bounded=False`
        (maintenance) waits as long as it takes."""
        if self.concurrency <= 0:
            yield
            return
        cost = max(1, cost)
        waiter = _SlotWaiter(account, cost, next(self._arrivals), asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        self._grant()
        try:
            async with asyncio.timeout(self.wait_seconds if bounded else None):
                await asyncio.shield(waiter.granted)
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            else:  # granted just as the wait ended: give the slot back
                self._release(waiter)
            if isinstance(exc, TimeoutError):
                retry_after = max(1, math.ceil(self.wait_seconds))
                raise ServiceUnavailable(
                    f"{self.concurrency} documents are being indexed already; try again shortly",
                    code="busy", headers={"Retry-After": str(retry_after)},
                ) from None
            raise
        try:
            yield
        finally:
            self._release(waiter)

    def _grant(self) -> None:
        while self._in_use < self.concurrency:
            eligible = [w for w in self._waiters if self._held.get(w.account, 0) < self.per_account]
            if not eligible:
                return
            waiter = min(eligible, key=lambda w: (self._cost.get(w.account, 0), w.arrival))
            self._waiters.remove(waiter)
            self._in_use += 1
            self._held[waiter.account] = self._held.get(waiter.account, 0) + 1
            self._cost[waiter.account] = self._cost.get(waiter.account, 0) + waiter.cost
            waiter.granted.set_result(None)

    def _release(self, waiter: _SlotWaiter) -> None:
        self._in_use -= 1
        held = self._held[waiter.account] - 1
        cost = self._cost[waiter.account] - waiter.cost
        if held:
            self._held[waiter.account], self._cost[waiter.account] = held, cost
        else:
            del self._held[waiter.account], self._cost[waiter.account]
        self._grant()

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


def limits_of(owner: str, settings: Settings) -> tuple[int, int]:
    """(max documents, max characters) of an owner; 0 means unlimited."""
    if org_of(owner) is not None:
        return settings.quota_org_max_documents, settings.quota_org_max_characters
    return settings.quota_max_documents, settings.quota_max_characters


async def usage_of(session: AsyncSession, owner: str, settings: Settings) -> Usage:
    """What the collections of `owner` (a user id or `org:<id>`) hold, against its quota."""
    documents, characters = (await session.execute(unscoped(
        select(func.count(), func.coalesce(func.sum(Document.content_chars), 0)).where(Document.owner == owner),
        "quotas count an owner's documents, whoever saved them (the caller's scope was checked before)",
    ))).one()
    max_documents, max_characters = limits_of(owner, settings)
    return Usage(owner, int(documents), int(characters), max_documents, max_characters)


@asynccontextmanager
async def owner_lock(session: AsyncSession, gate: IngestionGate, owner: str) -> AsyncIterator[None]:
    """Hold `owner`'s quota lock until the session's transaction ends (commit inside the block)."""
    async with gate.user_lock(owner):
        if session.get_bind().dialect.name == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(CAST(:namespace AS integer), hashtext(:owner))"),
                {"namespace": QUOTA_LOCK_NAMESPACE, "owner": owner},
            )
        yield


async def check_quota(session: AsyncSession, owner: str, new_characters: int, settings: Settings) -> None:
    """Inside `owner_lock`: QuotaExceeded (413) when one more document of `new_characters`
    would not fit; the transaction is ended (lock released) before raising."""
    usage = await usage_of(session, owner, settings)
    problem = _over_quota(usage, new_characters)
    if problem is not None:
        # Commit, not rollback: it only ends the read (and the lock) and, unlike a
        # rollback, leaves the session's other objects loaded.
        await session.commit()
        raise QuotaExceeded(problem, details={
            "owner": owner, "documents": usage.documents, "characters": usage.characters,
            "max_documents": usage.max_documents, "max_characters": usage.max_characters,
        })


async def insert_within_quota(session: AsyncSession, document: Document, settings: Settings,
                              gate: IngestionGate) -> None:
    """Insert and commit `document`, or raise QuotaExceeded (413) and change nothing.

    IntegrityError (the same content inserted concurrently) propagates to the caller.
    """
    async with owner_lock(session, gate, document.owner):
        await check_quota(session, document.owner, document.content_chars, settings)
        session.add(document)
        await session.commit()


def _over_quota(usage: Usage, new_characters: int) -> str | None:
    setting = "QUOTA_ORG_MAX" if org_of(usage.owner) is not None else "QUOTA_MAX"
    whose = "the organization's" if org_of(usage.owner) is not None else "your"
    if usage.max_documents and usage.documents + 1 > usage.max_documents:
        return (f"document quota exceeded: {whose} collections hold {usage.documents} of {usage.max_documents} "
                f"documents ({setting}_DOCUMENTS); delete some to add more")
    if usage.max_characters and usage.characters + new_characters > usage.max_characters:
        return (f"character quota exceeded: {whose} collections hold {usage.characters} of {usage.max_characters} "
                f"characters and this document has {new_characters} ({setting}_CHARACTERS)")
    return None
