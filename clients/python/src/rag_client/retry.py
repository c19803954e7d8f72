"""The one retry policy of both clients (tenacity): a 429 answer is waited out and the request
sent again, a bounded number of times, waiting what the service's Retry-After advises (else
2, 4, 8... seconds), never more than `max_wait`. Nothing else is retried: any other refusal
would be refused again, and a request that may have reached the service is not sent twice.
(A 401 is not a retry but a token refresh: `auth.TokenAuth`.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from rag_client.errors import RateLimited

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` attempts after the first; `sleep` / `async_sleep` wait between them
    (tests give ones that record the waits instead)."""

    max_retries: int = 5
    max_wait: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)
    async_sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    def wait(self, state: RetryCallState) -> float:
        """Seconds before the next attempt: the server's Retry-After, else exponential backoff."""
        refused = state.outcome.exception() if state.outcome else None
        advice = refused.retry_after if isinstance(refused, RateLimited) else None
        backoff = wait_exponential(multiplier=2, max=self.max_wait)(state)  # 2, 4, 8... s
        return min(self.max_wait, advice if advice is not None else backoff)

    def call(self, attempt: Callable[[], T]) -> T:
        """`attempt()` (which raises RateLimited on a 429) until it succeeds or retries run out;
        then the last RateLimited propagates."""
        return Retrying(sleep=self.sleep, **self._options())(attempt)

    async def acall(self, attempt: Callable[[], Awaitable[T]]) -> T:
        return await AsyncRetrying(sleep=self.async_sleep, **self._options())(attempt)

    def _options(self) -> dict[str, Any]:
        return {"stop": stop_after_attempt(self.max_retries + 1), "wait": self.wait,
                "retry": retry_if_exception_type(RateLimited), "reraise": True}
