"""Reading the account events feed (accounts/feed.py): erasure from a stored cursor, and
each replica's staleness signal.

Three readers, because they need different things:

`ErasureConsumer` (one cursor for the whole service, in the database table
`account_events_cursor`): applies `user.deleted` / `organization.deleted` (accounts/erasure.py)
in feed order. The cursor advances past an event only after that event was applied, with a
compare-and-set on the row (`WHERE cursor IS NOT DISTINCT FROM <the cursor read>`), so a crash
at any point re-applies at most the event in progress (erasure is idempotent). On Postgres a
step runs under a session advisory lock (`pg_try_advisory_lock`): replicas polling at once
do not apply the same events twice at the same time; one finds the lock taken and skips its
turn (the compare-and-set still guards the cursor if the lock's connection drops). On SQLite
(one process) an asyncio lock. A rag-service that was down reads from its stored cursor at
start-up, so deletions made meanwhile are erased then. 410 `cursor_expired` (events were
pruned before they were read: the service was down longer than the auth-service keeps them):
an error is logged and the consumer starts again from the oldest retained event (replaying is
harmless). Membership events need no erasure: the consumer only moves past them.

The sweep (`ErasureConsumer` named `erasure-sweep`, a cursor row of its own) applies the same
deletions a second time once ACCESS_TOKEN_MAX_AGE_SECONDS have passed since they occurred. A
request of the deleted account authenticated before its replica learned of the deletion can
still write after the first erasure (a chat turn, a document); once every token of the account
has expired nothing more can be written, and the sweep erases whatever came late. It stops at
the first event younger than that (its cursor stays before it) and goes on at a later poll.

`StalenessFollower` (one per replica, in memory): every replica must refuse tokens minted
before a membership change (auth/membership_changes.py), so each reads every event itself.
At start it asks `since = now - ACCESS_TOKEN_MAX_AGE_SECONDS` (older changes cannot concern
a live token), then follows `next_cursor`; after a 410 it starts again from `since`.

Both poll every ACCOUNT_EVENTS_POLL_SECONDS (`poll_periodically`) and read pages until
`has_more` is false. Failures (the auth-service down, 401 for a wrong ACCOUNT_EVENTS_TOKEN, the
database or vector store down while erasing) are logged once per outage, the state stays, and
the next poll tries again. Logs never name users or organizations.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from rag_service.accounts.erasure import Eraser
from rag_service.accounts.feed import AccountEvent, CursorExpired, FeedClient, FeedError, FeedRefused
from rag_service.auth.membership_changes import MembershipChanges
from rag_service.storage.locks import try_session_lock
from rag_service.storage.models import AccountEventsCursor, utcnow

if TYPE_CHECKING:
    from rag_service.runtime import Runtime

log = logging.getLogger(__name__)

ERASURE_CONSUMER = "erasure"
SWEEP_CONSUMER = "erasure-sweep"
# pg_try_advisory_lock keys of the consumers ("rag-evts" in ASCII, and the next one).
CONSUMER_LOCK_KEYS = {ERASURE_CONSUMER: 0x7261672D65767473, SWEEP_CONSUMER: 0x7261672D65767474}
# Pages read in one step at most (a backlog of 100k events at 500 a page); the next poll goes on.
MAX_PAGES_PER_STEP = 200


@dataclass(frozen=True)
class StepResult:
    applied: int = 0
    skipped: bool = False  # another replica holds the consumer lock


class ErasureConsumer:
    """`name` is its cursor row (and lock); with `settle_seconds`, it applies an event only once
    that long has passed since it occurred (the sweep, see the module docstring) and stops
    before the first younger one."""

    def __init__(self, feed: FeedClient, eraser: Eraser, engine: AsyncEngine,
                 sessionmaker: async_sessionmaker[AsyncSession], *, name: str = ERASURE_CONSUMER,
                 settle_seconds: float = 0, clock: Callable[[], float] = time.time) -> None:
        if name not in CONSUMER_LOCK_KEYS:
            raise ValueError(f"unknown consumer {name!r}")
        self.feed = feed
        self.name = name
        self.settle_seconds = settle_seconds
        self._eraser = eraser
        self._engine = engine
        self._sessionmaker = sessionmaker
        self._clock = clock
        self._local = asyncio.Lock()

    @classmethod
    def from_runtime(cls, runtime: Runtime, feed: FeedClient, **options: Any) -> ErasureConsumer:
        eraser = Eraser(runtime.sessionmaker, runtime.vector_store, runtime.ingestion_gate)
        return cls(feed, eraser, runtime.engine, runtime.sessionmaker, **options)

    def _settled(self, event: AccountEvent) -> bool:
        return self._clock() * 1000 - event.occurred_at >= self.settle_seconds * 1000

    async def step(self) -> StepResult:
        """Read and apply every event after the stored cursor (FeedError / database errors
        propagate; what was applied before stays applied and the cursor says so)."""
        async with self._exclusive() as held:
            if not held:
                return StepResult(skipped=True)
            applied = 0
            for _ in range(MAX_PAGES_PER_STEP):
                cursor = await self.cursor()
                try:
                    page = await self.feed.page(after=cursor)
                except CursorExpired:
                    log.error("account events: the stored cursor is older than the oldest event the auth-service "
                              "keeps (the service was down longer than its retention): deletions made meanwhile "
                              "may not be erased; starting again from the oldest retained event")
                    if cursor is None or not await self._advance(cursor, None, 0):
                        return StepResult(applied)
                    continue
                for event in page.events:
                    if not self._settled(event):
                        return StepResult(applied)  # the sweep's turn comes later
                    await self.apply(event)
                    if not await self._advance(cursor, event.cursor, 1):
                        return StepResult(applied)
                    cursor = event.cursor
                    applied += 1
                if page.next_cursor != cursor and not await self._advance(cursor, page.next_cursor, 0):
                    return StepResult(applied)
                if not page.has_more:
                    break
            return StepResult(applied)

    async def apply(self, event: AccountEvent) -> None:
        if event.type == "user.deleted":
            report = await self._eraser.erase_user(event.user_id)  # type: ignore[arg-type]
        elif event.type == "organization.deleted":
            report = await self._eraser.erase_organization(event.organization_id)  # type: ignore[arg-type]
        else:
            return  # membership changes: the staleness follower's (every replica's) concern
        log.info("account events: %s erased (%d documents, %d collections, %d conversations)", event.type,
                 report.documents, report.collections, report.conversations)

    async def cursor(self) -> str | None:
        async with self._sessionmaker() as session:
            cursor = await session.scalar(select(AccountEventsCursor.cursor)
                                          .where(AccountEventsCursor.consumer == self.name))
            await session.commit()
        return cursor

    async def _advance(self, seen: str | None, new: str | None, applied: int) -> bool:
        """Compare-and-set: the cursor moves from `seen` to `new` only if nobody moved it."""
        async with self._sessionmaker() as session:
            result = await session.execute(
                update(AccountEventsCursor)
                .where(AccountEventsCursor.consumer == self.name,
                       AccountEventsCursor.cursor.is_not_distinct_from(seen))
                .values(cursor=new, applied=AccountEventsCursor.applied + applied, updated_at=utcnow())
                .execution_options(synchronize_session=False))
            await session.commit()
        if result.rowcount != 1:
            log.warning("account events: another consumer moved the cursor; this step stops")
            return False
        return True

    @asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[bool]:
        """True when this process may consume now (the in-process lock, and on Postgres the
        advisory lock, held on a connection of its own for the whole step)."""
        if self._local.locked():
            yield False
            return
        async with self._local, try_session_lock(self._engine, CONSUMER_LOCK_KEYS[self.name]) as held:
            yield held


class StalenessFollower:
    def __init__(self, feed: FeedClient, changes: MembershipChanges, *, max_age_seconds: int,
                 clock: Callable[[], float] = time.time) -> None:
        self.feed = feed
        self.changes = changes
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._after: str | None = None  # None: (re)start from now - max age

    async def step(self) -> int:
        """Read every event since the last step into `changes`; returns how many."""
        recorded = 0
        for _ in range(MAX_PAGES_PER_STEP):
            try:
                if self._after is None:
                    page = await self.feed.page(since=max(0, int((self._clock() - self.max_age_seconds) * 1000)))
                else:
                    page = await self.feed.page(after=self._after)
            except CursorExpired:
                log.warning("account events: the staleness cursor expired; reading the last %d s again",
                            self.max_age_seconds)
                self._after = None
                continue
            for event in page.events:
                self.record(event)
            recorded += len(page.events)
            self._after = page.next_cursor
            if not page.has_more:
                break
        self.changes.forget_before(int(self._clock()) - self.max_age_seconds)
        return recorded

    def record(self, event: AccountEvent) -> None:
        if event.type in ("member.removed", "member.role_changed"):
            self.changes.member_changed(event.user_id, event.occurred_at)  # type: ignore[arg-type]
        elif event.type == "organization.deleted":
            self.changes.organization_deleted(event.organization_id, event.occurred_at)  # type: ignore[arg-type]
        elif event.type == "user.deleted":
            self.changes.user_deleted(event.user_id, event.occurred_at)  # type: ignore[arg-type]


async def poll_periodically(name: str, step: Callable[[], Awaitable[object]], interval: float) -> None:
    """Run `step` now and then every `interval` seconds until cancelled; failures are logged
    once per outage (type only: nothing that could quote an id), never raised."""
    failing = False
    while True:
        try:
            await step()
        except FeedError as exc:
            if not failing:
                level = logging.ERROR if isinstance(exc, FeedRefused) else logging.WARNING
                log.log(level, "account events (%s): %s; retrying every %.0f s", name, exc, interval)
            failing = True
        except Exception as exc:  # the database or vector store is down, or a bug: never stop polling
            if not failing:
                log.error("account events (%s): step failed: %s\n%s", name, type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)))
            failing = True
        else:
            if failing:
                log.info("account events (%s): reading the feed again", name)
            failing = False
        await asyncio.sleep(interval)


class AccountEvents:
    """The two readers of one runtime, their shared feed client, and their polling tasks."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.feed = FeedClient.from_settings(settings)
        self.erasure = ErasureConsumer.from_runtime(runtime, self.feed)
        self.sweep = ErasureConsumer.from_runtime(runtime, self.feed, name=SWEEP_CONSUMER,
                                                  settle_seconds=settings.access_token_max_age_seconds)
        self.staleness = StalenessFollower(self.feed, runtime.membership_changes,
                                           max_age_seconds=settings.access_token_max_age_seconds)
        self._interval = settings.account_events_poll_seconds
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def start(cls, runtime: Runtime) -> AccountEvents | None:
        """Polling tasks for `runtime`, or None (logged) when the feed is not configured."""
        settings = runtime.settings
        if settings.account_events_poll_seconds <= 0:
            return None
        if not settings.account_events_token:
            log.warning("ACCOUNT_EVENTS_TOKEN is not set: the auth-service's account events are not read, so "
                        "deleted accounts and organizations are not erased here and tokens minted before a "
                        "membership change keep their organizations until they expire")
            return None
        events = cls(runtime)
        events._tasks = [
            asyncio.create_task(poll_periodically("staleness", events.staleness.step, events._interval)),
            asyncio.create_task(poll_periodically("erasure", events.erasure.step, events._interval)),
            asyncio.create_task(poll_periodically("erasure sweep", events.sweep.step, events._interval)),
        ]
        return events

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.feed.aclose()
