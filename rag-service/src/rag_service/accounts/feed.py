"""The auth-service's account events feed, as a client reads it (ACCOUNT-EVENTS contract).

`GET /auth/events?after=<cursor>&limit=<n>` (or `?since=<epoch ms>`, or neither: from the
oldest retained event) with `Authorization: Bearer <ACCOUNT_EVENTS_TOKEN>` answers
`{"events": [{cursor, type, user_id, organization_id, role, occurred_at}], "next_cursor",
"has_more", "retention_seconds"}`. A consumer that always passes `next_cursor` sees every
committed event exactly once, in order. 401: the token is refused; 410 `cursor_expired`: the
cursor is older than the oldest retained event (events may have been missed).

Transient failures (connection errors, timeouts, 429, 5xx) are retried a few times with
jittered backoff (tenacity, core/retry.py's policy) before the caller sees `FeedUnavailable`.
An answer that does not parse is `FeedUnavailable` too: nothing of it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

from rag_service.config import Settings
from rag_service.core.retry import ProviderFailures, RetryPolicy, call_with_retries
from rag_service.errors import ProviderUnavailable

EventType = Literal["user.deleted", "organization.deleted", "member.removed", "member.role_changed"]
EVENT_TYPES: frozenset[str] = frozenset(EventType.__args__)  # type: ignore[attr-defined]
# Events per request (the contract's range is 1..1000).
PAGE_SIZE = 500
MAX_ID_CHARS = 255


def events_url(settings: Settings) -> str:
    """AUTH_EVENTS_URL, or the documented route on AUTH_JWKS_URL's server
    (…/api/auth/jwks -> …/auth/events, keeping any base path before it)."""
    if settings.auth_events_url:
        return settings.auth_events_url
    parts = urlsplit(settings.auth_jwks_url)
    path = parts.path
    if path.endswith("/api/auth/jwks"):
        path = path[: -len("/api/auth/jwks")] + "/auth/events"
    else:
        path = path.rsplit("/", 1)[0] + "/events"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@dataclass(frozen=True)
class AccountEvent:
    cursor: str
    type: EventType
    user_id: str | None
    organization_id: str | None
    role: str | None
    occurred_at: int  # epoch ms, on the auth-service's clock


@dataclass(frozen=True)
class FeedPage:
    events: list[AccountEvent]
    next_cursor: str
    has_more: bool
    retention_seconds: int


class FeedError(Exception):
    """The feed could not be read this time (the message never quotes ids)."""


class FeedRefused(FeedError):
    """401: ACCOUNT_EVENTS_TOKEN is missing, wrong, or not the auth-service's."""


class CursorExpired(FeedError):
    """410 `cursor_expired`: events after the cursor were pruned before we read them."""


class FeedUnavailable(FeedError):
    """Unreachable, a server error after the retries, or an answer that does not parse."""


def _text(value: Any, what: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS:
        raise ValueError(f"{what} must be a non-empty string")
    return value


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def parse_event(entry: Any) -> AccountEvent:
    if not isinstance(entry, dict):
        raise ValueError("an event must be an object")
    kind = entry.get("type")
    if kind not in EVENT_TYPES:
        raise ValueError("unknown event type")
    if not _whole(entry.get("occurred_at")):
        raise ValueError("occurred_at must be epoch milliseconds")
    event = AccountEvent(
        cursor=_text(entry.get("cursor"), "cursor"),  # type: ignore[arg-type]
        type=kind,
        user_id=_text(entry.get("user_id"), "user_id", optional=True),
        organization_id=_text(entry.get("organization_id"), "organization_id", optional=True),
        role=_text(entry.get("role"), "role", optional=True),
        occurred_at=entry["occurred_at"],
    )
    needs_user = kind != "organization.deleted"
    needs_org = kind != "user.deleted"
    if (needs_user and event.user_id is None) or (needs_org and event.organization_id is None):
        raise ValueError(f"{kind} must name its user and/or organization")
    return event


def parse_page(document: Any) -> FeedPage:
    """The answer, checked whole (ValueError otherwise: nothing of it is used)."""
    if not isinstance(document, dict) or not isinstance(document.get("events"), list):
        raise ValueError("the answer must be an object with an events list")
    if not isinstance(document.get("has_more"), bool) or not _whole(document.get("retention_seconds")):
        raise ValueError("has_more must be a boolean and retention_seconds an integer")
    return FeedPage(
        events=[parse_event(entry) for entry in document["events"]],
        next_cursor=_text(document.get("next_cursor"), "next_cursor"),  # type: ignore[arg-type]
        has_more=document["has_more"],
        retention_seconds=document["retention_seconds"],
    )


def _classify(exc: BaseException) -> Literal["transient", "fatal"] | None:
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return "transient" if status == 429 or status >= 500 else "fatal"
    if isinstance(exc, httpx.TransportError):
        return "transient"
    return None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


FAILURES = ProviderFailures("account events feed", _classify, _describe)


class FeedClient:
    """Reads pages of the feed (one `page` call = one HTTP request, retried if transient)."""

    def __init__(self, url: str, token: str, *, timeout: float,
                 retry: RetryPolicy = RetryPolicy(max_retries=2, base_delay=0.5, max_delay=4.0),
                 http_client: httpx.AsyncClient | None = None) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        self._retry = retry
        self._client = http_client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = http_client is None

    @classmethod
    def from_settings(cls, settings: Settings) -> FeedClient:
        assert settings.account_events_token  # callers check it (a warning, no polling)
        return cls(events_url(settings), settings.account_events_token, timeout=settings.jwks_timeout_seconds)

    async def page(self, *, after: str | None = None, since: int | None = None,
                   limit: int = PAGE_SIZE) -> FeedPage:
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        elif since is not None:
            params["since"] = since

        async def fetch() -> httpx.Response:
            response = await self._client.get(self.url, params=params, headers=self._headers)
            if response.status_code not in (401, 410):
                response.raise_for_status()
            return response

        try:
            response = await call_with_retries(fetch, FAILURES, self._retry)
        except ProviderUnavailable as exc:
            raise FeedUnavailable(exc.message) from exc
        if response.status_code == 401:
            raise FeedRefused("the auth-service refused ACCOUNT_EVENTS_TOKEN (401)")
        if response.status_code == 410:
            raise CursorExpired("the cursor is older than the oldest event the auth-service keeps (410)")
        try:
            return parse_page(response.json())
        except ValueError as exc:  # also JSONDecodeError
            raise FeedUnavailable(f"an answer that does not parse ({exc})") from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
