"""Access tokens for the rag-service, from the auth-service: sign in with email/password (and
the account's two-factor code, when it has them) or exchange an API key, then refresh before
the JWT's `exp` (and once more on a 401).

The refresh steps are plain data (`TokenRequest`); `auth.TokenAuth` sends them, for the sync
and the async client alike."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from rag_client.errors import AuthenticationError, RagError, error_from_response

# Refresh when less than this share of the token's lifetime is left (at most 60 s early).
REFRESH_FRACTION = 0.2
MAX_REFRESH_MARGIN = 60.0
# What the authenticator app shows; anything else the code callback returns is sent as a
# backup code (the auth-service checks both).
TOTP_CODE = re.compile(r"\d{6}")


@dataclass(frozen=True)
class TokenRequest:
    method: str
    url: str
    headers: dict[str, str]
    json: dict[str, Any] | None = None

    def build(self, timeout: dict[str, Any] | None) -> httpx.Request:
        """The request itself; `timeout` is the calling client's (httpx reads it from extensions)."""
        return httpx.Request(self.method, self.url, headers=self.headers, json=self.json,
                             extensions={"timeout": timeout} if timeout else None)


class TokenState:
    """Holds the current access JWT and knows how to get the next one.

    - API key: every refresh is an exchange at POST /auth/token with `x-api-key`.
    - Email/password: sign in once (POST /auth/login), then mint from the session token
      (POST /auth/token with it as bearer); if the session has ended, sign in again. An
      account with two-factor codes answers the sign-in with a challenge (401
      `two_factor_required`); `two_factor_code()` gives the code (or a backup code) that
      POST /auth/login/two-factor finishes it with. Called at each sign-in, never stored.
    - A fixed access token: used as is, never refreshed.
    """

    def __init__(self, auth_url: str | None, *, api_key: str | None = None, email: str | None = None,
                 password: str | None = None, access_token: str | None = None,
                 two_factor_code: Callable[[], str] | None = None, clock: Any = time.monotonic) -> None:
        if sum(x is not None for x in (api_key, access_token, email)) != 1:
            raise ValueError("give exactly one of api_key, email (+password) or access_token")
        if email is not None and password is None:
            raise ValueError("email sign-in needs a password")
        if two_factor_code is not None and email is None:
            raise ValueError("two_factor_code is for an email/password sign-in")
        if (api_key or email) and not auth_url:
            raise ValueError("auth_url is needed to sign in or exchange an API key")
        self.auth_url = (auth_url or "").rstrip("/")
        self.api_key = api_key
        self.email = email
        self._password = password
        self._two_factor_code = two_factor_code
        # The sign-in's challenge token while its code is still to be sent.
        self._challenge: str | None = None
        self.session_token: str | None = None
        self.access_token = access_token
        self._clock = clock
        self._refresh_at: float | None = None  # None: never (fixed token) or not fetched yet

    @property
    def can_refresh(self) -> bool:
        return self.api_key is not None or self.email is not None

    def needs_refresh(self) -> bool:
        if self.access_token is None:
            return True
        return self._refresh_at is not None and self._clock() >= self._refresh_at

    def invalidate(self, *, session: bool = False) -> None:
        """Forget the access token (the next call fetches another), or with `session` the
        sign-in's session (the next API-key call signs in again)."""
        if session:
            self.session_token = None
        elif self.can_refresh:
            self.access_token = None

    @property
    def needs_session(self) -> bool:
        """An email/password client that has not signed in yet (API-key routes need the session)."""
        return self.email is not None and self.session_token is None

    def session_headers(self) -> dict[str, str]:
        """Headers for the auth-service's API-key routes: the session, never an access JWT."""
        if self.email is None:
            raise RagError(401, "session_required", "managing API keys needs an email/password sign-in")
        if self.session_token is None:
            raise RagError(401, "session_required", "not signed in yet")
        return {"authorization": f"Bearer {self.session_token}"}

    def next_request(self, *, relogin: bool = False) -> TokenRequest:
        if self.api_key is not None:
            return TokenRequest("POST", f"{self.auth_url}/auth/token", {"x-api-key": self.api_key})
        if self.email is None:
            raise AuthenticationError(401, "token_expired", "the access token expired and cannot be refreshed")
        if self._challenge is not None and self._two_factor_code is not None:
            token, self._challenge = self._challenge, None
            code = self._two_factor_code().strip()
            field = "code" if TOTP_CODE.fullmatch(code) else "backup_code"
            return TokenRequest("POST", f"{self.auth_url}/auth/login/two-factor", {},
                                {"two_factor_token": token, field: code})
        if self.session_token and not relogin:
            return TokenRequest("POST", f"{self.auth_url}/auth/token",
                                {"authorization": f"Bearer {self.session_token}"})
        return TokenRequest("POST", f"{self.auth_url}/auth/login", {},
                            {"email": self.email, "password": self._password})

    def accept(self, request: TokenRequest, response: httpx.Response) -> bool:
        """Take the answer to `request`. False: ask `next_request(relogin=True)` for the next step
        (the session ended: sign in again; or the sign-in wants its two-factor code)."""
        if response.status_code == 401 and request.url.endswith("/auth/token") and self.email is not None \
                and self.api_key is None:
            self.session_token = None
            return False
        if response.status_code >= 400:
            error = error_from_response(response)
            if error.code == "two_factor_required" and request.url.endswith("/auth/login"):
                if self._two_factor_code is None:
                    raise AuthenticationError(401, error.code, "this account has two-factor codes: give the client "
                                              "two_factor_code= (a callable returning the current code)",
                                              request_id=error.request_id)
                self._challenge = _challenge_token(response)
                return False
            raise error
        body = response.json()
        self.access_token = body["access_token"]
        if body.get("session_token"):
            self.session_token = body["session_token"]
        lifetime = float(body.get("expires_in") or 0)
        # The server's lifetime, counted on our clock: immune to clock skew between machines.
        margin = min(MAX_REFRESH_MARGIN, lifetime * REFRESH_FRACTION)
        self._refresh_at = self._clock() + max(0.0, lifetime - margin) if lifetime else None
        return True


def _challenge_token(response: httpx.Response) -> str:
    """The challenge token of a `two_factor_required` answer (`two_factor.token`)."""
    try:
        token = response.json()["two_factor"]["token"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise AuthenticationError(401, "two_factor_required", "the sign-in asked for a two-factor code "
                                  "but gave no challenge token")
    return token
