"""The one retry policy (`rag_client.retry.RetryPolicy`, tenacity) as both clients apply it:
429s are waited out (Retry-After, else 2, 4, 8... s, capped), a bounded number of times; no
other refusal is sent again. Waits are recorded by an injected sleep, never slept."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from rag_client import AsyncRagClient, DeltaEvent, RagClient, RateLimited, ServiceUnavailable
from rag_client.retry import RetryPolicy
from services_support import API_KEY, AUTH_URL, RAG_URL, Services, async_transport, error, sync_transport


class Waits:
    """Records the waits asked for; `sleep` for the sync client, `async_sleep` for the async one."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)

    async def async_sleep(self, seconds: float) -> None:
        self.seconds.append(seconds)

    def policy(self, max_retries: int = 5, max_wait: float = 60.0) -> RetryPolicy:
        return RetryPolicy(max_retries=max_retries, max_wait=max_wait, sleep=self.sleep, async_sleep=self.async_sleep)


def rate_limited(retry_after: str | None = None) -> httpx.Response:
    return error(429, "rate_limited", {"retry-after": retry_after} if retry_after is not None else None)


@pytest.fixture
def waits() -> Waits:
    return Waits()


# The same scenarios on both clients: `list_documents` as a plain function returning the total.
ListDocuments = Callable[[RetryPolicy], int]


@pytest.fixture(params=["sync", "async"])
def list_documents(request: pytest.FixtureRequest, services: Services) -> Iterator[ListDocuments]:
    import asyncio

    if request.param == "sync":
        def run_sync(policy: RetryPolicy) -> int:
            with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, retry=policy,
                           http=httpx.Client(transport=sync_transport(services))) as client:
                return client.list_documents().total

        yield run_sync
        return

    def run_async(policy: RetryPolicy) -> int:
        async def go() -> int:
            async with AsyncRagClient(RAG_URL, AUTH_URL, api_key=API_KEY, retry=policy,
                                      http=httpx.AsyncClient(transport=async_transport(services))) as client:
                return (await client.list_documents()).total

        return asyncio.run(go())

    yield run_async


def test_a_429_waits_what_retry_after_advises_then_succeeds(list_documents: ListDocuments, services: Services,
                                                            waits: Waits) -> None:
    services.queued["/documents"] = [rate_limited("3"), rate_limited("0.5")]
    assert list_documents(waits.policy()) == 0
    assert waits.seconds == [3.0, 0.5]
    assert len(services.authorizations("/documents")) == 3


def test_without_advice_the_waits_grow_exponentially_up_to_the_cap(list_documents: ListDocuments,
                                                                   services: Services, waits: Waits) -> None:
    services.queued["/documents"] = [rate_limited() for _ in range(4)]
    assert list_documents(waits.policy(max_wait=10)) == 0
    assert waits.seconds == [2.0, 4.0, 8.0, 10.0]


def test_advice_beyond_the_cap_is_capped(list_documents: ListDocuments, services: Services, waits: Waits) -> None:
    services.queued["/documents"] = [rate_limited("3600")]
    list_documents(waits.policy(max_wait=60))
    assert waits.seconds == [60.0]


def test_when_retries_run_out_the_last_429_is_raised(list_documents: ListDocuments, services: Services,
                                                     waits: Waits) -> None:
    services.queued["/documents"] = [rate_limited("1") for _ in range(10)]
    with pytest.raises(RateLimited) as limited:
        list_documents(waits.policy(max_retries=2))
    assert limited.value.code == "rate_limited" and limited.value.retry_after == 1.0
    assert waits.seconds == [1.0, 1.0]
    assert len(services.authorizations("/documents")) == 3, "the first attempt and two retries"


def test_other_refusals_are_not_sent_again(list_documents: ListDocuments, services: Services, waits: Waits) -> None:
    services.queued["/documents"] = [error(503, "provider_unavailable", {"retry-after": "1"})]
    with pytest.raises(ServiceUnavailable) as unavailable:
        list_documents(waits.policy())
    assert unavailable.value.code == "provider_unavailable"
    assert waits.seconds == [] and len(services.authorizations("/documents")) == 1


def test_a_rate_limited_stream_is_opened_again(services: Services, waits: Waits) -> None:
    services.queued["/chat"] = [rate_limited("2")]
    with RagClient(RAG_URL, AUTH_URL, api_key=API_KEY, retry=waits.policy(),
                   http=httpx.Client(transport=sync_transport(services))) as client:
        events = list(client.chat_stream("What does tar do?"))
    assert events == [DeltaEvent("Tar archives.")]
    assert waits.seconds == [2.0] and len(services.authorizations("/chat")) == 2
