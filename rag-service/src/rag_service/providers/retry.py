"""Bounded retries with exponential backoff and full jitter for the HTTP providers.

Each provider classifies its own exceptions (`classify`):
- "transient": worth another attempt (429, 5xx, timeouts, connection errors);
- "fatal": the provider refused the request (bad key, bad model name...): no retry;
- None: not a provider failure (a bug): propagated unchanged.
Transient failures are retried up to `RetryPolicy.max_retries` times; when they run out, and
for fatal failures, the caller gets `ProviderUnavailable` (503) with a readable message.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, TypeVar

from rag_service.providers.base import ProviderUnavailable

T = TypeVar("T")
Failure = Literal["transient", "fatal"]
Classifier = Callable[[BaseException], Failure | None]
Describer = Callable[[BaseException], str]


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` extra attempts after the first; delays grow as base * 2**attempt."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0-based).

        Full jitter (uniform in [0, cap]) spreads out clients that failed together; a
        server-sent Retry-After is honoured but never beyond `max_delay`.
        """
        cap = min(self.max_delay, self.base_delay * (2**attempt))
        wait = random.uniform(0, cap)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def _describe_default(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


async def call_with_retries(
    operation: Callable[[], Awaitable[T]],
    *,
    provider: str,
    policy: RetryPolicy,
    classify: Classifier,
    describe: Describer = _describe_default,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
) -> T:
    """Await `operation()` until it succeeds, retrying transient failures."""
    attempt = 0
    while True:
        try:
            return await operation()
        except ProviderUnavailable:
            raise
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            if kind == "fatal":
                raise ProviderUnavailable(provider, describe(exc)) from exc
            if attempt >= policy.max_retries:
                raise ProviderUnavailable(
                    provider, f"{describe(exc)} (gave up after {attempt + 1} attempts)"
                ) from exc
            await asyncio.sleep(policy.delay(attempt, retry_after(exc)))
            attempt += 1


async def stream_with_retries(
    open_stream: Callable[[], AsyncIterator[str]],
    *,
    provider: str,
    policy: RetryPolicy,
    classify: Classifier,
    describe: Describer = _describe_default,
    retry_after: Callable[[BaseException], float | None] = lambda exc: None,
) -> AsyncIterator[str]:
    """Yield the pieces of `open_stream()`, starting over on transient failures.

    Starting over is only safe while nothing has reached the caller: once a piece has
    been yielded, any failure ends the answer with `ProviderUnavailable`.
    """
    attempt = 0
    while True:
        yielded = False
        try:
            async with aclosing(open_stream()) as pieces:
                async for piece in pieces:
                    yielded = True
                    yield piece
            return
        except ProviderUnavailable:
            raise
        except Exception as exc:
            kind = classify(exc)
            if kind is None:
                raise
            if yielded:
                raise ProviderUnavailable(provider, f"answer interrupted: {describe(exc)}") from exc
            if kind == "fatal":
                raise ProviderUnavailable(provider, describe(exc)) from exc
            if attempt >= policy.max_retries:
                raise ProviderUnavailable(
                    provider, f"{describe(exc)} (gave up after {attempt + 1} attempts)"
                ) from exc
            await asyncio.sleep(policy.delay(attempt, retry_after(exc)))
            attempt += 1


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
