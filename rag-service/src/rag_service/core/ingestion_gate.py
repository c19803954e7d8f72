"""The per-process cap on concurrent ingestions, shared fairly between accounts.

Its cost unit is the estimated chunks of a document (documents/quotas.py `estimated_chunks`).

With several replicas (a Postgres database and a vector store that is not single-process),
an account's share is also claimed in the database (`SharedAccountSlots`, implemented by
storage/locks.py `PostgresAccountSlots`): without it each replica would give one account its
full share, and with two replicas the account would hold twice its share of the encoders.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from rag_service.config import Settings
from rag_service.core.locks import KeyedLocks
from rag_service.errors import ServiceUnavailable


# How often a request waiting for its account's share held on another replica looks again
# (a replica's release cannot wake another replica's waiter).
SHARED_SLOT_POLL_SECONDS = 0.1


class HeldSlot(Protocol):
    async def release(self) -> None:
        """Give the slot back (also given back when its holder's connection is lost)."""


class SharedAccountSlots(Protocol):
    """An account's ingestion slots shared by every replica of the service."""

    async def try_claim(self, account: str, slots: int) -> HeldSlot | None:
        """One of `account`'s `slots` slots, now held, or None when all are held."""


@dataclass(eq=False)
class _SlotWaiter:
    account: str
    cost: int
    arrival: int
    granted: asyncio.Future[None]


class IngestionGate:
    """At most `concurrency` ingestions at once in this process, shared fairly between
    accounts; more wait up to `wait_seconds`, then get 503 `busy` with Retry-After. Also
    holds this process's locks per key (`locks`: owners' quota locks and collections' locks,
    storage/locks.py), shared by every service built with this gate.

    Fair share: one account holds at most `per_account` slots (default half of them,
    rounded up), so while one account floods, the other slots stay free for everyone else;
    a freed slot goes to the waiting account with the least indexing in flight, measured in
    estimated chunks (what indexing costs: the text after extraction, not the upload's
    bytes), then to the earliest. The encoder shares its lanes per account the same way
    (providers/encoder_worker.py), so a small document of another account is indexed within about
    one encoder sub-batch per lane.

    With `shared` (several replicas), a request that got its local slot also claims one of
    its account's `per_account` slots held in the database, within the same wait; the local
    slot comes first so that waiting connections stay bounded by `concurrency`, and one
    account waiting for its share elsewhere blocks at most its own local share.
    """

    def __init__(self, concurrency: int, wait_seconds: float, per_account: int | None = None,
                 shared: SharedAccountSlots | None = None) -> None:
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        half = max(1, (concurrency + 1) // 2)
        self.per_account = max(1, min(concurrency, per_account or half)) if concurrency > 0 else 0
        self._in_use = 0
        self._held: dict[str, int] = {}
        self._cost: dict[str, int] = {}
        self._waiters: list[_SlotWaiter] = []
        self._arrivals = itertools.count()
        self.locks = KeyedLocks()
        self._shared = shared

    @classmethod
    def from_settings(cls, settings: Settings, shared: SharedAccountSlots | None = None) -> IngestionGate:
        return cls(settings.ingest_concurrency, settings.ingest_queue_timeout_seconds,
                   settings.ingest_concurrency_per_account or None, shared)

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
        shared: HeldSlot | None = None
        try:
            async with asyncio.timeout(self.wait_seconds if bounded else None):
                await asyncio.shield(waiter.granted)
                if self._shared is not None:
                    shared = await self._claim_shared(self._shared, account)
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            else:  # the local slot was granted (the wait ended after it): give it back
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
            try:
                if shared is not None:
                    await shared.release()
            finally:
                self._release(waiter)

    async def _claim_shared(self, shared: SharedAccountSlots, account: str) -> HeldSlot:
        """One of `account`'s slots across replicas, waiting (in the caller's timeout) while
        its other requests hold them all."""
        while True:
            held = await shared.try_claim(account, self.per_account)
            if held is not None:
                return held
            await asyncio.sleep(SHARED_SLOT_POLL_SECONDS)

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
