"""Per-user rate limits with two separate budgets.

- cheap  (`settings.rate_limit_cheap`,  default 300/minute): listing, reading, deleting.
- costly (`settings.rate_limit_costly`, default 60/minute): embedding, ingesting, searching, chat.

Use in a route: `@router.post("/search", dependencies=[CostlyRateLimit])`. The dependency
depends on `current_user`, so it also authenticates, and the budget is keyed by the JWT `sub`.
Moving-window strategy; in-memory store by default, Redis when `REDIS_URL` is set (needed
when several replicas must share one budget). If Redis cannot be reached the request is let
through and a warning is logged: losing the limiter must not take the whole API down.

The limiter lives on `app.state.rate_limiter` (built by `create_app`), not in a global.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Literal

from fastapi import Depends, Request
from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter

from rag_service.auth.tokens import CurrentUser
from rag_service.deps import current_user
from rag_service.config import Settings
from rag_service.errors import RateLimited

log = logging.getLogger(__name__)

Budget = Literal["cheap", "costly"]
REDIS_TIMEOUT_S = 2.0


def _storage(redis_url: str | None) -> Storage:
    if not redis_url:
        return MemoryStorage()
    uri = redis_url if redis_url.startswith("async+") else f"async+{redis_url}"
    # redis-py's asyncio client (installed); short timeouts so a dead Redis costs little.
    return RedisStorage(uri, implementation="redispy", socket_connect_timeout=REDIS_TIMEOUT_S,
                        socket_timeout=REDIS_TIMEOUT_S)


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.rate_limit_enabled
        self._items: dict[Budget, RateLimitItem] = {
            "cheap": parse(settings.rate_limit_cheap),
            "costly": parse(settings.rate_limit_costly),
        }
        self._strategy = MovingWindowRateLimiter(_storage(settings.redis_url))

    async def hit(self, budget: Budget, user_id: str) -> None:
        """Spend one unit of `user_id`'s `budget`; raise RateLimited (429) when it is used up."""
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


def _rate_limit(budget: Budget):
    async def enforce_rate_limit(request: Request, user: CurrentUser = Depends(current_user)) -> None:
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(budget, user.id)

    enforce_rate_limit.__name__ = f"enforce_{budget}_rate_limit"
    return enforce_rate_limit


CheapRateLimit = Depends(_rate_limit("cheap"))
CostlyRateLimit = Depends(_rate_limit("costly"))
