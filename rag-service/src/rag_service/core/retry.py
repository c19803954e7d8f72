"""Bounded retries with exponential backoff and full jitter (tenacity) for every remote call:
the HTTP providers, the Qdrant server adapter, the account-events feed.

Each provider describes how to read its exceptions in a `ProviderFailures`; `classify`:
- "transient": worth another attempt (429, 5xx, timeouts, connection errors);
- "fatal": the provider refused the request (bad key, bad model name...): no retry;
- None: not a provider failure (a bug): propagated unchanged.
Transient failures are retried up to `RetryPolicy.max_retries` times; when they run out, and
for fatal failures, the caller gets `ProviderUnavailable` (503) with a readable message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Literal, TypeVar, cast

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_random_exponential,
)

from rag_service.errors import ProviderUnavailable

T = TypeVar("T")
Failure = Literal["transient", "fatal"]
Classifier = Callable[[BaseException], Failure | None]
Describer = Callable[[BaseException], str]
RetryAfter = Callable[[BaseException], float | None]


def _describe_default(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _no_retry_after(exc: BaseException) -> float | None:
    return None


@dataclass(frozen=True)
class ProviderFailures:
    """How to read one provider's exceptions: its name (in messages), which failures are
    worth another attempt, how to say what went wrong, and any server-sent Retry-After."""

    provider: str
    classify: Classifier
    describe: Describer = _describe_default
    retry_after: RetryAfter = _no_retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """`max_retries` extra attempts after the first; delays grow as base * 2**attempt."""

    max_retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def wait(self, retry_after: RetryAfter = _no_retry_after) -> Callable[[RetryCallState], float]:
        """Seconds to wait before the next attempt.

        Full jitter (uniform in [0, min(max_delay, base * 2**retry)]) spreads out clients
        that failed together; a server-sent Retry-After is honoured but never beyond
        `max_delay`.
        """
        jitter = wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)

        def wait(state: RetryCallState) -> float:
            delay = jitter(state)
            failure = state.outcome.exception() if state.outcome else None
            hinted = retry_after(failure) if failure is not None else None
            return delay if hinted is None else max(delay, min(hinted, self.max_delay))

        return wait

    def retrying(self, failures: ProviderFailures) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self.wait(failures.retry_after),
            retry=retry_if_exception(
                lambda exc: not isinstance(exc, ProviderUnavailable) and failures.classify(exc) == "transient"
            ),
        )


async def call_with_retries(operation: Callable[[], Awaitable[T]], failures: ProviderFailures,
                            policy: RetryPolicy) -> T:
    """Await `operation()` until it succeeds, retrying transient failures."""
    try:
        return await policy.retrying(failures)(operation)
    except RetryError as exhausted:
        last = exhausted.last_attempt
        # tenacity only retries (and so only gives up) on an exception.
        failure = cast(BaseException, last.exception())
        raise ProviderUnavailable(
            failures.provider, f"{failures.describe(failure)} (gave up after {last.attempt_number} attempts)"
        ) from failure
    except ProviderUnavailable:
        raise
    except Exception as exc:
        if failures.classify(exc) == "fatal":
            raise ProviderUnavailable(failures.provider, failures.describe(exc)) from exc
        raise  # not a provider failure: a bug, propagated unchanged


async def stream_with_retries(open_stream: Callable[[], AsyncIterator[str]], failures: ProviderFailures,
                              policy: RetryPolicy) -> AsyncIterator[str]:
    """Yield the pieces of `open_stream()`, starting over on transient failures.

    Starting over is only safe while nothing has reached the caller, so only opening the
    stream up to its first piece is retried; once a piece has been yielded, any failure
    ends the answer with `ProviderUnavailable`.
    """

    async def open_to_first_piece() -> tuple[AsyncIterator[str], str | None]:
        stream = open_stream()
        try:
            return stream, await anext(stream)
        except StopAsyncIteration:
            return stream, None
        except BaseException:
            await stream.aclose()  # type: ignore[attr-defined]
            raise

    stream, first = await call_with_retries(open_to_first_piece, failures, policy)
    async with aclosing(stream):  # type: ignore[type-var]
        if first is None:
            return
        yield first
        try:
            async for piece in stream:
                yield piece
        except ProviderUnavailable:
            raise
        except Exception as exc:
            if failures.classify(exc) is None:
                raise
            raise ProviderUnavailable(failures.provider, f"answer interrupted: {failures.describe(exc)}") from exc


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
