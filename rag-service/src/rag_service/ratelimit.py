"""Per-user rate limits: two request budgets and one byte budget for ingestion.

- cheap  (`settings.rate_limit_cheap`,  default 300/minute requests): listing, reading,
  deleting, and every ingestion request (a floor against floods of tiny requests).
- costly (`settings.rate_limit_costly`, default 60/minute requests): embedding, searching, chat.
- ingest bytes (`settings.rate_limit_ingest_bytes`, default 100,000,000/minute bytes):
  /save-document, /documents/upload and /documents/batch spend the bytes of the documents
  they carry (text as UTF-8, files as sent), charged once per request by the documents
  intake (`documents/intake.py`) after the request's own checks and before any item is
  read. A request that does not fit in what is left is refused whole (429 + Retry-After,
  nothing spent); one larger than the whole budget is a 413.

Use in a route: `@router.post("/search", dependencies=[CostlyRateLimit])` (the dependencies
live in deps.py). They depend on the current user, so they also authenticate, and every
budget is keyed by the JWT `sub`.
Request budgets use the moving window; the byte budget uses the sliding window counter
(two counters per user: the moving window would store one timestamp per byte). In memory
by default, in Redis when `REDIS_URL` is set (so replicas share every budget). If Redis
cannot be reached the request is let through and a warning is logged: losing the limiter
must not take the whole API down.

The limiter lives on the `Runtime` (one per process, built with it), not in a global.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from rag_service.config import Settings
from rag_service.errors import PayloadTooLarge, RateLimited

log = logging.getLogger(__name__)

Budget = Literal["cheap", "costly"]
INGEST_BYTES = "ingest-bytes"


def _storage(redis_url: str | None, timeout_seconds: float) -> Storage:
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    # redis-py's asyncio client (installed); short timeouts so a dead Redis costs little.
    return RedisStorage(uri, implementation="redispy", socket_connect_timeout=timeout_seconds,
                        socket_timeout=timeout_seconds)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self._items: dict[Budget, RateLimitItem] = {
            "cheap": parse(settings.rate_limit_cheap),
            "costly": parse(settings.rate_limit_costly),
        }
        self.ingest_bytes = parse(settings.rate_limit_ingest_bytes)
        storage = _storage(settings.redis_url, settings.redis_timeout_seconds)
        self._strategy = MovingWindowRateLimiter(storage)
        self._byte_strategy = SlidingWindowCounterRateLimiter(storage)

    async def hit(self, budget: Budget, user_id: str) -> None:
        """Spend one request of `user_id`'s `budget`; raise RateLimited (429) when it is used up."""
        if not self.enabled:
            return
        item = self._items[budget]
        # The budget name is part of the key, so the two budgets never share a counter
        # even when they are configured with the same limit string.
        try:
            allowed = await self._strategy.hit(item, "rag", budget, user_id)
            if allowed:
                return
            stats = await self._strategy.get_window_stats(item, "rag", budget, user_id)
        except Exception as exc:  # store unreachable (Redis down): fail open, loudly
            log.warning("rate limit store failed, allowing request: %r", exc)
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            f"rate limit exceeded ({item}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )

    async def spend_ingest_bytes(self, user_id: str, cost: int) -> None:
        """Spend `cost` bytes of `user_id`'s ingestion budget, all or nothing: 429 with the
        seconds until they fit, or 413 when they exceed the whole budget."""
        if not self.enabled:
            return
        item = self.ingest_bytes
        if cost > item.amount:
            raise PayloadTooLarge(
                f"this request carries {cost} bytes of documents, more than the whole ingestion budget "
                f"of {item.amount} bytes per {_period(item)} (RATE_LIMIT_INGEST_BYTES); send it in smaller requests"
            )
        try:
            if await self._byte_strategy.hit(item, "rag", INGEST_BYTES, user_id, cost=max(1, cost)):
                return
            window = await self._byte_strategy.storage.get_sliding_window(  # type: ignore[attr-defined]
                item.key_for("rag", INGEST_BYTES, user_id), item.get_expiry())
        except Exception as exc:  # store unreachable (Redis down): fail open, loudly
            log.warning("rate limit store failed, allowing request: %r", exc)
            return
        retry_after = max(1, math.ceil(seconds_until_room(window, item.amount, item.get_expiry(), cost)))
        raise RateLimited(
            f"ingestion budget exceeded: this request's {cost} bytes of documents do not fit in what is left of "
            f"{item.amount} bytes per {_period(item)}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def seconds_until_room(window: tuple[int, float, int, float], limit: int, expiry: int, cost: int) -> float:
    """When `cost` more fits in a sliding window counter, from the storage's
    (previous count, previous TTL, current count, current TTL).

    The counter weighs the previous window's count by the share of it still inside the
    moving window (previous TTL / expiry, falling to 0 when the current window ends, at
    current TTL - expiry); the current window's count then becomes the previous one.
    """
    previous, previous_ttl, current, current_ttl = window
    room = limit - cost
    if current <= room:  # fits once enough of the previous window has slid out
        if previous <= 0:
            return 0.0
        return max(0.0, previous_ttl - (room - current) * expiry / previous)
    # Only after the current window has ended and slid out far enough.
    until_rotation = max(0.0, current_ttl - expiry)
    return until_rotation + max(0.0, expiry - room * expiry / current)


def _period(item: RateLimitItem) -> str:
    return item.GRANULARITY.name if item.multiples == 1 else f"{item.multiples} {item.GRANULARITY.name}s"
