"""Verification of the access JWTs issued by the auth-service (Better Auth `jwt()` plugin).

Rules (all fail closed):
- The header `alg` must be in `settings.auth_algorithms` (asymmetric only) and is checked
  BEFORE any key lookup, so `none`/HS* tokens never cause a JWKS fetch.
- Keys come from the JWKS at `settings.auth_jwks_url`, cached for `jwks_cache_seconds`,
  stale-while-revalidate: a token whose `kid` is cached never waits for the network; once
  the cache is older than its lifetime a refresh runs in the background. One fetch at a
  time (single-flight): concurrent requests join the fetch in flight.
  A token with an unknown `kid` triggers a fetch that it awaits, at most once per
  `jwks_refetch_min_interval` seconds (a flood of random kids costs one fetch per interval).
- Each key is bound to one algorithm (PyJWK); a token whose `alg` differs from its key's is
  rejected, so an RSA/EC/OKP key can never be used as an HMAC secret.
- `exp`, `iat`, `iss`, `aud`, `sub` are required; `nbf` is honoured; leeway is small.
- `aud` must name AUTH_AUDIENCE (session and API-key tokens) or one of this service's OAuth
  resource identifiers (auth/oauth_resources.py: OAuth access tokens for MCP clients).
- `scope`, when present, must grant `read` or `write` (`scope_of`), and `orgs` (auth/orgs.py)
  must have exactly the shared schema's shape, or the token is refused.
- A verified token is remembered (by its exact string, at most VERIFIED_CACHE_SIZE, until
  its `exp`): a client sends the same token with every request for its lifetime, and
  decoding it and checking its EdDSA signature again (~0.2 ms) held the event loop each time.
  A remembered token is accepted only while the key that verified it is still the one
  published under its `kid`, so dropping a key from the JWKS revokes its tokens at the
  next refresh, as without the cache.
- JWKS unreachable and no key cached -> 503 (never 500, never an accepted token).
  JWKS unreachable but keys cached (even past the cache lifetime) -> the known kids keep
  working, because an auth-service restart must not log every user out; unknown kids are
  rejected with 401 since we cannot check them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any

import httpx
import jwt
from rag_service.auth.oauth_resources import resource_identifiers
from rag_service.auth.orgs import parse_orgs
from rag_service.core.roles import NO_MEMBERSHIPS, Memberships
from rag_service.config import Settings
from rag_service.errors import ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# storage.access.ORG_OWNER_PREFIX (not imported: auth does not depend on storage).
ORG_SUBJECT_PREFIX = "org:"
# `scope` (shared-schemas/jwt-claims.schema.json): absent on a browser/session token (full
# scope); "read" or "write" on a token exchanged for an API key; on an OAuth access token the
# granted scopes, space-separated (RFC 9068), of which only these two mean anything here
# (openid, offline_access... grant nothing). Weakest first: "write" includes reading.
SCOPES = ("read", "write")
# Real access tokens are well under 2 KB; anything this big is junk, refuse before parsing.
# Owner columns are VARCHAR(255): a longer subject would fail in the database (a 500).
MAX_SUBJECT_CHARS = 255
# Verified tokens remembered (least recently used dropped first): a few MB at most.
VERIFIED_CACHE_SIZE = 4096


@dataclass(frozen=True)
class _Verified:
    claims: dict[str, Any]
    expires: float  # `exp` + leeway (epoch seconds): not accepted from then on
    kid: str | None
    key: jwt.PyJWK


@dataclass(frozen=True)
class CurrentUser:
    """The verified caller. `id` is the JWT `sub` (the auth-service user id); `scope` is the
    token's verified `scope` claim ("read" | "write"), None for a session token (full scope);
    `orgs` maps each organization in the token's `orgs` claim to the caller's role there
    (read-only; `scope` still caps what a role allows)."""

    id: str
    claims: dict[str, Any] = field(default_factory=dict)
    scope: str | None = None
    orgs: Memberships = field(default_factory=lambda: NO_MEMBERSHIPS)

    @classmethod
    def from_claims(cls, claims: dict[str, Any]) -> CurrentUser:
        """The principal of claims returned by `AccessTokenVerifier.verify`."""
        return cls(id=claims["sub"], claims=claims, scope=scope_of(claims), orgs=parse_orgs(claims))


def scope_of(claims: dict[str, Any]) -> str | None:
    """The caller's scope: None without a `scope` claim (full scope), else the strongest of
    SCOPES the claim grants. A claim granting neither (or not a string) is refused: 401."""
    if "scope" not in claims:
        return None
    granted = claims["scope"].split(" ") if isinstance(claims["scope"], str) else []
    for scope in reversed(SCOPES):
        if scope in granted:
            return scope
    raise Unauthorized("invalid access token: its scope grants neither 'read' nor 'write'")


class JwksUnavailable(ServiceUnavailable):
    code = "auth_unavailable"


class AccessTokenVerifier:
    """Verifies bearer JWTs against the auth-service JWKS. One instance per process."""

    def __init__(self, settings: Settings, *, http_client: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        # `clock` times the JWKS cache and fetch intervals; `wall_clock` is compared with `exp`.
        self._clock = clock
        self._wall_clock = wall_clock
        self._algorithms = list(settings.auth_algorithms)
        # Any one of them in `aud` will do (PyJWT): a token names the resource it was issued for.
        self._audiences = [settings.auth_audience, *resource_identifiers(settings)]
        self._client = http_client or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
        self._owns_client = http_client is None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._fetch: asyncio.Task[None] | None = None  # the one JWKS fetch in flight
        self._verified: OrderedDict[str, _Verified] = OrderedDict()

    async def aclose(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)
        if self._owns_client:
            await self._client.aclose()

    # --- public -------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims, or raise Unauthorized (401) / ServiceUnavailable (503).

        Header fields such as `jku`, `x5u` or an embedded `jwk` are ignored: keys only ever
        come from the configured JWKS URL."""
        if len(token) > self._settings.max_token_chars:
            raise Unauthorized("malformed access token")
        remembered = self._remembered(token)
        if remembered is not None:
            return remembered
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed access token") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self._algorithms:
            raise Unauthorized("access token algorithm not allowed")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("malformed access token")

        key = await self._key_for(kid)
        if key.algorithm_name != alg:
            raise Unauthorized("access token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=self._audiences,
                issuer=self._settings.auth_issuer,
                leeway=self._settings.jwt_leeway_seconds,
                options={"require": REQUIRED_CLAIMS, "verify_nbf": True, "verify_iat": True},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("access token expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid access token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.strip():
            raise Unauthorized("invalid access token: empty subject")
        if len(sub) > MAX_SUBJECT_CHARS:
            raise Unauthorized(f"invalid access token: subject longer than {MAX_SUBJECT_CHARS} characters")
        if sub.startswith(ORG_SUBJECT_PREFIX):
            # An organization's owner key (storage/access.py): a user with this id would own its data.
            raise Unauthorized("invalid access token: subject in the organizations' key space")
        scope_of(claims)  # a `scope` granting neither read nor write refuses the whole token
        parse_orgs(claims)  # a malformed `orgs` claim refuses the whole token
        expires = float(claims["exp"]) + self._settings.jwt_leeway_seconds
        if self._wall_clock() >= expires:  # the same clock as a remembered token's expiry
            raise Unauthorized("access token expired", code="token_expired")
        self._remember(token, _Verified(copy.deepcopy(claims), expires, kid, key))
        return claims

    def _remembered(self, token: str) -> dict[str, Any] | None:
        """The claims of a token verified before, if it is unexpired and its key still stands."""
        entry = self._verified.get(token)
        if entry is None:
            return None
        if self._wall_clock() >= entry.expires or self._lookup(entry.kid) is not entry.key:
            # Expired, or its key was rotated out: verify from scratch (and fail as usual).
            del self._verified[token]
            return None
        self._verified.move_to_end(token)
        if self._is_stale() and self._may_fetch():
            self._start_fetch("cache expired")
        return copy.deepcopy(entry.claims)  # nested claims (`orgs`) too: callers may not change it

    def _remember(self, token: str, entry: _Verified) -> None:
        self._verified[token] = entry
        self._verified.move_to_end(token)
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)

    # --- keys ---------------------------------------------------------------------------

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        key = self._lookup(kid)
        if key is not None:
            # Stale-while-revalidate: a known kid never waits for the network. An old cache
            # is refreshed in the background, and only one fetch runs at a time.
            if self._is_stale() and self._may_fetch():
                self._start_fetch("cache expired")
            return key
        # Unknown kid (maybe the issuer rotated keys) or a cold cache: this request needs the
        # fetch's result. It joins a fetch already in flight, else starts one if the rate
        # limit allows (a flood of random kids costs one fetch per interval).
        fetch = self._in_flight()
        if fetch is None and self._may_fetch():
            fetch = self._start_fetch("unknown kid" if self._fetched_at is not None else "cache empty")
        if fetch is not None:
            # Shielded: a client that disconnects must not cancel the fetch others await.
            await asyncio.shield(fetch)
        if self._fetched_at is None:
            raise JwksUnavailable("cannot reach the auth service to verify the access token")
        key = self._lookup(kid)
        if key is None:
            raise Unauthorized("access token signed by an unknown key")
        return key

    def _is_stale(self) -> bool:
        return self._fetched_at is None or self._clock() - self._fetched_at >= self._settings.jwks_cache_seconds

    def _may_fetch(self) -> bool:
        """Single-flight and rate-limited. With nothing cached we retry sooner (at most once
        a second) so the service recovers quickly after the auth-service comes up."""
        if self._in_flight() is not None:
            return False
        interval = self._settings.jwks_refetch_min_interval
        if self._fetched_at is None:
            interval = min(interval, 1.0)
        return self._attempted_at is None or self._clock() - self._attempted_at >= interval

    def _in_flight(self) -> asyncio.Task[None] | None:
        return self._fetch if self._fetch is not None and not self._fetch.done() else None

    def _start_fetch(self, reason: str) -> asyncio.Task[None]:
        self._attempted_at = self._clock()
        task = asyncio.get_running_loop().create_task(self._refresh(reason=reason))
        self._fetch = task
        task.add_done_callback(self._fetch_done)
        return task

    def _fetch_done(self, task: asyncio.Task[None]) -> None:
        if self._fetch is task:
            self._fetch = None

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # Without a kid we can only pick the key if there is exactly one.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, *, reason: str) -> None:
        """Fetch the JWKS (one at a time, see `_start_fetch`). On failure the cached keys
        stay as they are; nothing raises out of here (it may run with no one awaiting)."""
        attempted_at = self._attempted_at
        try:
            response = await self._client.get(self._settings.auth_jwks_url)
            response.raise_for_status()
            keys = self._parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("jwks fetch failed (%s): %s", reason, type(exc).__name__)
            return
        except Exception:
            log.exception("jwks fetch failed (%s)", reason)
            return
        self._keys = keys
        self._fetched_at = attempted_at
        log.info("jwks refreshed (%s): %d key(s)", reason, len(keys))

    def _parse_jwks(self, document: Any) -> dict[str | None, jwt.PyJWK]:
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("JWKS document has no 'keys' list")
        keys: dict[str | None, jwt.PyJWK] = {}
        for jwk_data in document["keys"]:
            if not isinstance(jwk_data, dict) or jwk_data.get("use", "sig") != "sig":
                continue
            try:
                key = jwt.PyJWK(jwk_data)
            except jwt.PyJWTError as exc:
                log.warning("skipping unusable JWKS key %r: %s", jwk_data.get("kid"), exc)
                continue
            if key.algorithm_name not in self._algorithms:
                continue  # e.g. an "oct" (HMAC) key: never usable here
            keys[jwk_data.get("kid")] = key
        return keys
