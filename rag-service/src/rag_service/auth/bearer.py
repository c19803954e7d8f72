"""Who is calling: one bearer credential -> the verified `CurrentUser`, for every protocol.

The REST routes (deps.current_user), the MCP server (mcp_server/) and the OpenAI-compatible
API (openai_api/) all authenticate through `BearerAuthenticator.authenticate`, so an access
JWT and an API key mean the same thing everywhere:
- an access JWT from the auth-service (auth/tokens.py), or
- an API key (`rag_…`, auth/api_keys.py), exchanged with the auth-service for an access JWT
  carrying the key's `scope`, cached briefly.
A token with organizations minted before its user's latest membership change is refused
(401 `token_stale`, auth/membership_changes.py), any token of a deleted account minted before
the deletion too (401 `account_deleted`); for an API key the cached JWT is dropped and
a fresh one asked for once, since the key itself is still good.
"""

from __future__ import annotations

from rag_service.auth.api_keys import ApiKeyVerifier, looks_like_api_key
from rag_service.auth.membership_changes import DELETED, STALE, MembershipChanges
from rag_service.auth.tokens import AccessTokenVerifier, CurrentUser
from rag_service.errors import Unauthorized


class BearerAuthenticator:
    def __init__(self, tokens: AccessTokenVerifier, api_keys: ApiKeyVerifier,
                 membership_changes: MembershipChanges) -> None:
        self._tokens = tokens
        self._api_keys = api_keys
        self._membership_changes = membership_changes

    async def authenticate(self, bearer: str | None, *, client_ip: str | None = None) -> CurrentUser:
        """The verified caller; Unauthorized (401), RateLimited (429) or ServiceUnavailable (503)."""
        bearer = (bearer or "").strip()
        if not bearer:
            raise Unauthorized("missing bearer access token")
        if not looks_like_api_key(bearer):
            return self._fresh(CurrentUser.from_claims(await self._tokens.verify(bearer)))
        user = CurrentUser.from_claims(await self._api_keys.verify(bearer, client_ip=client_ip))
        if self._refusal(user) is not None:
            self._api_keys.forget(bearer)
            user = CurrentUser.from_claims(await self._api_keys.verify(bearer, client_ip=client_ip))
        return self._fresh(user)

    def _refusal(self, user: CurrentUser) -> str | None:
        return self._membership_changes.refusal(user.id, user.claims["iat"], user.orgs)

    def _fresh(self, user: CurrentUser) -> CurrentUser:
        refusal = self._refusal(user)
        if refusal == DELETED:
            raise Unauthorized("this account was deleted", code=DELETED)
        if refusal is not None:
            raise Unauthorized("memberships changed: mint a new token", code=STALE)
        return user
