"""API keys as bearer tokens: `Authorization: Bearer rag_…` works wherever an access JWT does.

What the `openai` SDKs, LangChain and MCP clients send is one static key. The rag-service
does not keep keys: it asks the auth-service, which owns them (Better Auth's API-key plugin),
through the exchange it already serves (`POST /api/auth/api-key/token`, `x-api-key`): the
plugin verifies the key (hash lookup, enabled, expiry, the key's own rate limit) and mints a
short-lived access JWT carrying the key's `scope` and its owner's `orgs`. That JWT is then
verified here like any other (auth/tokens.py), so a key gives exactly what its exchanged JWT
gives and no new secret is shared between the services.

Caching (settings.api_key_cache_seconds, default 10 s):
- The answer is remembered per key for at most that long, keyed by the SHA-256 of the key
  (the key itself is never stored, logged or put in an error message). A revoked or expired
  key is therefore refused at most `api_key_cache_seconds` after the revocation, on every
  replica (each asks the auth-service itself once its entry is older than that).
- A refused key is remembered as refused for the same time, so a client retrying a wrong key
  costs one exchange per window, not one per request.
- One exchange per key at a time (single-flight): concurrent requests with the same key join
  the exchange in flight. With the default 10 s that is at most 6 exchanges a minute per key
  per replica, far below the key's own limit (API_KEY_RATE_LIMIT_MAX, 30 a minute by default).
- When the auth-service cannot be reached, a key whose entry has lapsed is not accepted
  (503): revocation must not depend on the auth-service being up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.config import Settings
from rag_service.errors import RateLimited, ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

# auth-service/src/api-keys.ts KEY_PREFIX: every key Better Auth makes for us starts with it,
# and no JWT can (a JWT starts with its base64url header, "eyJ").
API_KEY_PREFIX = "rag_"
# The exchange refuses longer keys too (api-keys.ts); a longer bearer is junk, refused here
# without a request.
# Keys remembered (least recently used dropped first): a few hundred KB at most.
CACHE_SIZE = 4096

INVALID_KEY_MESSAGE = "the API key is invalid, revoked or expired"


def looks_like_api_key(bearer: str) -> bool:
    return bearer.startswith(API_KEY_PREFIX)


def api_key_exchange_url(settings: Settings) -> str:
    """AUTH_API_KEY_EXCHANGE_URL, or Better Auth's exchange beside AUTH_JWKS_URL
    (…/api/auth/jwks -> …/api/auth/api-key/token)."""
    if settings.auth_api_key_exchange_url:
        return settings.auth_api_key_exchange_url
    parts = urlsplit(settings.auth_jwks_url)
    path = parts.path.rsplit("/", 1)[0] + "/api-key/token"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class _Answer:
    """The auth-service's answer for one key: an access JWT, or refused (token None)."""

    token: str | None
    until: float  # monotonic: not used from then on


class ApiKeyVerifier:
    """Turns an API key into verified access-token claims. One instance per process."""

    def __init__(self, settings: Settings, tokens: AccessTokenVerifier, *,
                 http_client: httpx.AsyncClient | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._ttl = settings.api_key_cache_seconds
        self._max_key_chars = settings.max_api_key_chars
        self._url = api_key_exchange_url(settings)
        self._tokens = tokens
        self._client = http_client or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
        self._owns_client = http_client is None
        self._answers: OrderedDict[str, _Answer] = OrderedDict()
        self._in_flight: dict[str, asyncio.Task[_Answer]] = {}

    async def aclose(self) -> None:
        for task in list(self._in_flight.values()):
            task.cancel()
        await asyncio.gather(*self._in_flight.values(), return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    async def verify(self, key: str, *, client_ip: str | None = None) -> dict[str, Any]:
        """The claims of the key's access JWT, or Unauthorized (401), RateLimited (429, the
        key's own limit at the auth-service) or ServiceUnavailable (503)."""
        if not looks_like_api_key(key) or len(key) > self._max_key_chars or not key.isascii() or not key.isprintable():
            raise Unauthorized(INVALID_KEY_MESSAGE, code="invalid_api_key")
        digest = key_digest(key)
        answer = self._cached(digest)
        if answer is None:
            task = self._in_flight.get(digest)
            if task is None:
                task = asyncio.get_running_loop().create_task(self._exchange(key, client_ip))
                self._in_flight[digest] = task
                task.add_done_callback(lambda done: self._exchange_done(digest, done))
            # Shielded: a client that goes away must not cancel the exchange others await.
            answer = await asyncio.shield(task)
        if answer.token is None:
            raise Unauthorized(INVALID_KEY_MESSAGE, code="invalid_api_key")
        return await self._tokens.verify(answer.token)

    def forget(self, key: str) -> None:
        """Drop the remembered answer for `key` (its JWT went stale): the next request asks again."""
        self._answers.pop(key_digest(key), None)

    def _cached(self, digest: str) -> _Answer | None:
        answer = self._answers.get(digest)
        if answer is None:
            return None
        if self._clock() >= answer.until:
            del self._answers[digest]
            return None
        self._answers.move_to_end(digest)
        return answer

    def _exchange_done(self, digest: str, task: asyncio.Task[_Answer]) -> None:
        if self._in_flight.get(digest) is task:
            del self._in_flight[digest]
        if task.cancelled() or task.exception() is not None:
            return
        self._answers[digest] = task.result()
        self._answers.move_to_end(digest)
        while len(self._answers) > CACHE_SIZE:
            self._answers.popitem(last=False)

    async def _exchange(self, key: str, client_ip: str | None) -> _Answer:
        started = self._clock()
        headers = {"x-api-key": key}
        if client_ip:
            # Counted against the caller's address, not ours, by an auth-service that lists
            # this service in TRUSTED_PROXIES (it ignores the header otherwise).
            headers["x-forwarded-for"] = client_ip
        try:
            # Better Auth's endpoints take a JSON body (415 without one); this one reads only the header.
            response = await self._client.post(self._url, headers=headers, json={})
        except httpx.HTTPError as exc:
            log.warning("API key exchange failed: %s", type(exc).__name__)
            raise ServiceUnavailable("cannot reach the auth service to verify the API key",
                                     code="auth_unavailable") from None
        # The key's lifetime in the cache counts from when we asked, not when we heard back.
        until = started + self._ttl
        if response.status_code == 200:
            try:
                token = response.json()["token"]
                if not isinstance(token, str) or not token:
                    raise ValueError("no token")
            except (ValueError, KeyError, TypeError):
                log.warning("API key exchange answered 200 without a token")
                raise ServiceUnavailable("the auth service gave an unusable answer", code="auth_unavailable") from None
            return _Answer(token, until)
        if response.status_code == 401:
            return _Answer(None, until)
        if response.status_code == 429:
            retry_after = response.headers.get("retry-after", "")
            retry_after = retry_after if retry_after.isdigit() else "60"
            raise RateLimited("this API key's rate limit at the auth service is exhausted; retry later",
                              code="api_key_rate_limited", headers={"Retry-After": retry_after})
        log.warning("API key exchange answered %d", response.status_code)
        raise ServiceUnavailable("the auth service could not verify the API key", code="auth_unavailable")
