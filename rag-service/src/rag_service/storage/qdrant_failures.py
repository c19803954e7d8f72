"""How the Qdrant server adapter reads qdrant-client's failures: which are worth another
attempt, and which API error each becomes.

qdrant-client speaks REST through httpx. Its failures reach the API as HTTP 503:
unreachable, timed out, 5xx or 429 -> `service_unavailable` (with Retry-After when Qdrant
sent one); the API key refused (401/403) -> `vector_store_misconfigured`, never echoing
the key; the collection gone (404) -> `vector_collection_missing`; a body qdrant-client
cannot read -> `vector_store_bad_response`. Other 4xx answers are bugs in our requests and
propagate (500).

Retries (tenacity, `RetryPolicy`): a request that never reached Qdrant (connection refused
or timed out, 429) is retried whatever it does; one whose outcome is unknown (read timeout,
dropped connection, 5xx) only when repeating it is harmless. `REPEATABLE` and `SENT_ONCE`
are the two rules, for requests that are harmless to repeat and for the others.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Literal, ParamSpec, TypeVar, cast

import httpx
from pydantic import ValidationError
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import RetryError

from rag_service.core.retry import ProviderFailures, RetryPolicy, parse_retry_after
from rag_service.errors import AppError, ServiceUnavailable

# Two retries, short waits: a search holds a user's request meanwhile.
QDRANT_RETRIES = RetryPolicy(max_retries=2, base_delay=0.2, max_delay=2.0)

P = ParamSpec("P")
T = TypeVar("T")
Failure = Literal["not_sent", "outcome_unknown", "key_refused", "not_found", "unreadable"]


class VectorStoreUnreadable(Exception):
    """qdrant-client could not make sense of a response body."""


def failure_kind(exc: BaseException) -> Failure | None:
    """What a qdrant-client exception says about the request; None: not Qdrant's failure."""
    source = exc.source if isinstance(exc, ResponseHandlingException) else exc
    if isinstance(source, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, ResourceExhaustedResponse)):
        return "not_sent"
    if isinstance(source, (httpx.TransportError, TimeoutError)):
        return "outcome_unknown"
    if isinstance(source, (ValidationError, VectorStoreUnreadable)):
        return "unreadable"
    if isinstance(exc, UnexpectedResponse):
        status = exc.status_code or 500
        if status == 429:
            return "not_sent"
        if status >= 500:
            return "outcome_unknown"
        if status in (401, 403):
            return "key_refused"
        if status == 404:
            return "not_found"
    return None


def server_retry_after(exc: BaseException) -> float | None:
    """Seconds Qdrant asked us to wait (429, 503 with Retry-After), if any."""
    if isinstance(exc, ResourceExhaustedResponse):
        return float(exc.retry_after_s)
    if isinstance(exc, UnexpectedResponse):
        return parse_retry_after(exc.headers.get("retry-after"))
    return None


# Which failures are worth another attempt, for requests that are harmless to repeat or not.
REPEATABLE = ProviderFailures(
    "Qdrant", lambda exc: "transient" if failure_kind(exc) in ("not_sent", "outcome_unknown") else None,
    retry_after=server_retry_after)
SENT_ONCE = ProviderFailures(
    "Qdrant", lambda exc: "transient" if failure_kind(exc) == "not_sent" else None, retry_after=server_retry_after)


def service_error(exc: BaseException, collection: str) -> AppError | None:
    """The API error for a failed Qdrant request (None: a bug, propagated as it is).
    Messages name the failure, never the request's headers (the API key) or body."""
    failure = failure_kind(exc)
    if failure in ("not_sent", "outcome_unknown"):
        wait = server_retry_after(exc)
        headers = {"Retry-After": str(max(1, round(wait)))} if wait is not None else None
        source = exc.source if isinstance(exc, ResponseHandlingException) else exc
        if isinstance(exc, (UnexpectedResponse, ResourceExhaustedResponse)):
            status = exc.status_code if isinstance(exc, UnexpectedResponse) else 429
            message = f"the vector database failed (HTTP {status})"
        elif isinstance(source, (httpx.TimeoutException, TimeoutError)):
            message = "the vector database timed out"
        else:
            message = "the vector database is unreachable"
        return ServiceUnavailable(message, headers=headers)
    if failure == "key_refused":
        status = cast(UnexpectedResponse, exc).status_code
        return ServiceUnavailable(
            f"the vector database refused this service's credentials (HTTP {status}): check QDRANT_API_KEY",
            code="vector_store_misconfigured")
    if failure == "not_found":
        # Qdrant's own 404: "Not found: Collection `name` doesn't exist!"
        if b"collection" in cast(UnexpectedResponse, exc).content.lower():
            return ServiceUnavailable(
                f"the vector collection {collection!r} does not exist on the Qdrant server (deleted?); "
                "restarting the service creates it", code="vector_collection_missing")
        return ServiceUnavailable("the Qdrant server answered 404 Not Found: check QDRANT_URL",
                                  code="vector_store_misconfigured")
    if failure == "unreadable":
        return ServiceUnavailable("the vector database sent a response this service cannot read",
                                  code="vector_store_bad_response")
    return None


def unavailable_on_failure(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Map Qdrant's failures (after any retries) to the API's errors, see `service_error`."""

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except RetryError as exhausted:
            # tenacity only retries (and so only gives up) on an exception.
            failure = cast(BaseException, exhausted.last_attempt.exception())
        except Exception as exc:  # noqa: BLE001 (mapped below or re-raised as it is)
            failure = exc
        store = args[0]
        error = service_error(failure, getattr(store, "collection", ""))
        if error is None:
            raise failure
        raise error from failure

    return wrapper
