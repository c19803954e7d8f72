"""The shared retry helper: bounded attempts, capped delays, bugs never swallowed."""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from rag_service.core.retry import (
    ProviderFailures,
    RetryPolicy,
    call_with_retries,
    parse_retry_after,
    stream_with_retries,
)
from rag_service.errors import ProviderUnavailable

FAST = RetryPolicy(max_retries=3, base_delay=0.001, max_delay=0.002)


def classify(exc: BaseException):
    if isinstance(exc, TimeoutError):
        return "transient"
    if isinstance(exc, PermissionError):
        return "fatal"
    return None


FAILURES = ProviderFailures("p", classify)


def failed_attempt(number: int) -> RetryCallState:
    """tenacity's state after attempt `number` (1-based) failed."""
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = number
    state.set_exception((TimeoutError, TimeoutError("slow"), None))
    return state


def test_delays_grow_but_stay_under_the_cap():
    policy = RetryPolicy(max_retries=5, base_delay=0.5, max_delay=4.0)
    wait = policy.wait()
    for attempt, cap in enumerate([0.5, 1.0, 2.0, 4.0, 4.0, 4.0], start=1):
        delays = [wait(failed_attempt(attempt)) for _ in range(200)]
        assert all(0 <= d <= cap for d in delays)
        assert max(delays) > cap / 2  # jitter spans the range, not a fixed delay
    assert wait(failed_attempt(1)) <= 0.5
    assert 1.0 <= policy.wait(lambda exc: 1.0)(failed_attempt(1)) <= 1.0  # Retry-After honoured...
    assert policy.wait(lambda exc: 3600)(failed_attempt(1)) == 4.0  # ...but never beyond max_delay


def test_parse_retry_after():
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") is None
    assert parse_retry_after("-1") is None


async def test_transient_failures_are_retried_a_bounded_number_of_times():
    calls = 0

    async def always_times_out():
        nonlocal calls
        calls += 1
        raise TimeoutError("slow")

    with pytest.raises(ProviderUnavailable, match="gave up after 4 attempts"):
        await call_with_retries(always_times_out, FAILURES, FAST)
    assert calls == 4


async def test_fatal_failure_is_not_retried_and_bugs_propagate_unchanged():
    calls = 0

    async def refused():
        nonlocal calls
        calls += 1
        raise PermissionError("bad key")

    with pytest.raises(ProviderUnavailable, match="bad key"):
        await call_with_retries(refused, FAILURES, FAST)
    assert calls == 1

    async def bug():
        raise KeyError("oops")

    with pytest.raises(KeyError):
        await call_with_retries(bug, FAILURES, FAST)


async def test_stream_restarts_only_before_the_first_piece():
    attempts = 0

    async def flaky_stream():
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise TimeoutError("first attempt fails before any piece")
        yield "a"
        yield "b"

    pieces = [p async for p in stream_with_retries(flaky_stream, FAILURES, FAST)]
    assert pieces == ["a", "b"] and attempts == 2


async def test_consumer_stopping_early_closes_the_inner_stream():
    closed = False

    async def endless():
        nonlocal closed
        try:
            while True:
                yield "x"
        finally:
            closed = True

    stream = stream_with_retries(endless, FAILURES, FAST)
    assert await anext(stream) == "x"
    await stream.aclose()
    assert closed
