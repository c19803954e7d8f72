"""Verification of the access JWTs issued by the auth-service (Better Auth `jwt()` plugin).

Rules (all fail closed):
- The header `alg` must be in `settings.auth_algorithms` (asymmetric only) and is checked
  BEFORE any key lookup, so `none`/HS* tokens never cause a JWKS fetch.
- Keys come from the JWKS at `settings.auth_jwks_url`, cached for `jwks_cache_seconds`.
  A token with an unknown `kid` triggers a refetch, at most once per
  `jwks_refetch_min_interval` seconds (a flood of random kids costs one fetch per interval).
- Each key is bound to one algorithm (PyJWK); a token whose `alg` differs from its key's is
  rejected, so an RSA/EC/OKP key can never be used as an HMAC secret.
- `exp`, `iat`, `iss`, `aud`, `sub` are required; `nbf` is honoured; leeway is small.
- JWKS unreachable and no key cached -> 503 (never 500, never an accepted token).
  JWKS unreachable but keys cached (even past the cache lifetime) -> the known kids keep
  working, because an auth-service restart must not log every user out; unknown kids are
  rejected with 401 since we cannot check them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rag_service.config import Settings
from rag_service.errors import ServiceUnavailable, Unauthorized

log = logging.getLogger(__name__)

REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# `scope` (shared-schemas/jwt-claims.schema.json): only on tokens exchanged for an API key;
# absent = a browser/session token with full scope. Any other value is refused (fail closed).
SCOPES = ("read", "write")
# Real access tokens are well under 2 KB; anything this big is junk, refuse before parsing.
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True)
class CurrentUser:
    """The verified caller. `id` is the JWT `sub` (the auth-service user id); `scope` is the
    token's verified `scope` claim ("read" | "write"), None for a session token (full scope)."""

    id: str
    claims: dict[str, Any] = field(default_factory=dict)
    scope: str | None = None


class JwksUnavailable(ServiceUnavailable):
    code = "auth_unavailable"


class AccessTokenVerifier:
    """Verifies bearer JWTs against the auth-service JWKS. One instance per process."""

    def __init__(self, settings: Settings, *, http_client: httpx.AsyncClient | None = None) -> None:
        self._settings = settings
        self._algorithms = list(settings.auth_algorithms)
        self._client = http_client or httpx.AsyncClient(timeout=settings.jwks_timeout_seconds)
        self._owns_client = http_client is None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch (monotonic)
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    # --- public -------------------------------------------------------------------------

    async def verify(self, token: str) -> dict[str, Any]:
        """Return the verified claims, or raise Unauthorized (401) / ServiceUnavailable (503).

        Header fields such as `jku`, `x5u` or an embedded `jwk` are ignored: keys only ever
        come from the configured JWKS URL."""
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("malformed access token")
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
                audience=self._settings.auth_audience,
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
        if "scope" in claims and claims["scope"] not in SCOPES:
            raise Unauthorized("invalid access token: unknown scope")
        return claims

    # --- keys ---------------------------------------------------------------------------

    async def _key_for(self, kid: str | None) -> jwt.PyJWK:
        now = time.monotonic()
        fresh = self._fetched_at is not None and now - self._fetched_at < self._settings.jwks_cache_seconds
        if fresh and (key := self._lookup(kid)) is not None:
            return key
        # A fetch is needed: unknown kid (maybe the issuer rotated keys), or a cold/expired cache.
        # Rate-limited either way; with nothing cached we retry sooner (at most once a second)
        # so the service recovers quickly after the auth-service comes up.
        interval = self._settings.jwks_refetch_min_interval
        if self._fetched_at is None:
            interval = min(interval, 1.0)
        if self._attempted_at is None or now - self._attempted_at >= interval:
            await self._refresh(reason="unknown kid" if fresh else "cache expired or empty")
        elif self._lock.locked():
            # A concurrent request's fetch is in flight (e.g. the first burst after start-up):
            # wait for its result instead of failing; this starts no fetch of its own.
            async with self._lock:
                pass
        if self._fetched_at is None:
            raise JwksUnavailable("cannot reach the auth service to verify the access token")
        key = self._lookup(kid)
        if key is None:
            raise Unauthorized("access token signed by an unknown key")
        return key

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # Without a kid we can only pick the key if there is exactly one.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    async def _refresh(self, *, reason: str) -> None:
        """Fetch the JWKS, one fetch at a time. On failure the cached keys stay as they are."""
        attempted_before = self._attempted_at
        async with self._lock:
            if self._attempted_at != attempted_before:
                return  # another request fetched while we waited: use its result
            self._attempted_at = time.monotonic()
            try:
                response = await self._client.get(self._settings.auth_jwks_url)
                response.raise_for_status()
                keys = self._parse_jwks(response.json())
            except (httpx.HTTPError, ValueError) as exc:
                log.warning("jwks fetch failed (%s): %r", reason, exc)
                return
            self._keys = keys
            self._fetched_at = self._attempted_at
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


_bearer = HTTPBearer(auto_error=False, description="Access JWT from the auth-service")


async def current_user(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Security(_bearer),
) -> CurrentUser:
    """FastAPI dependency: the verified caller, 401 for a missing/invalid token."""
    if credentials is None or not credentials.credentials.strip():
        raise Unauthorized("missing bearer access token")
    verifier: AccessTokenVerifier = request.app.state.runtime.token_verifier
    claims = await verifier.verify(credentials.credentials.strip())
    user = CurrentUser(id=claims["sub"], claims=claims, scope=claims.get("scope"))
    # Read by the access log (observability.py).
    request.state.user_id = user.id
    return user
