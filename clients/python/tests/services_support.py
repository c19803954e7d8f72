"""The auth-service's token routes and a few rag-service routes, answered in memory behind
`httpx.MockTransport` (the HTTP layer): the client's flow and retry policy are tested on real
httpx clients, the services themselves in tests-e2e."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

RAG_URL = "http://rag.test"
AUTH_URL = "http://auth.test"
API_KEY = "rag_test_key"
EMAIL = "reader@example.com"
PASSWORD = "correct horse battery"
LIFETIME = 300  # seconds: refreshed when 60 s (a fifth, at most 60 s) are left
EMPTY_PAGE = {"documents": [], "total": 0, "page": 1, "pages": 1}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": code, "request_id": "req-1"}},
                          headers=headers)


class Clock:
    """Seconds for the tokens' lifetimes, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Services:
    """Issues access tokens "a1", "a2"... (API-key exchange, sign-in, mint from a session) and
    session tokens "s1", "s2"...; rag routes accept only the tokens in `valid`. `seen` lists
    every request as (path, Authorization header)."""

    valid: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    issued: list[str] = field(default_factory=list)
    sessions_issued: int = 0
    seen: list[tuple[str, str | None]] = field(default_factory=list)
    api_key_valid: bool = True
    # False: rag routes refuse every token, even one issued a moment ago.
    accept_tokens: bool = True
    # Per rag path, answers to give before the normal one (e.g. 429s), consumed in order.
    queued: dict[str, list[httpx.Response]] = field(default_factory=dict)
    # Set: the account has two-factor codes. The sign-in answers 401 two_factor_required with
    # a challenge ("c1", "c2"...) that POST /auth/login/two-factor takes once, with this code
    # or one of `backup_codes` (each once).
    two_factor_code: str | None = None
    backup_codes: set[str] = field(default_factory=set)
    challenges: set[str] = field(default_factory=set)
    challenges_issued: int = 0
    # The JSON body of every POST /auth/login/two-factor, in order.
    two_factor_bodies: list[dict[str, str]] = field(default_factory=list)

    def authorizations(self, path: str) -> list[str | None]:
        """The Authorization header of every request to `path`, in order."""
        return [auth for seen_path, auth in self.seen if seen_path == path]

    @property
    def token_calls(self) -> list[str]:
        return [path for path, _ in self.seen if path.startswith("/auth/") and not path.startswith("/auth/api-keys")]

    def _access(self, *, session: bool = False) -> httpx.Response:
        token = f"a{len(self.issued) + 1}"
        self.issued.append(token)
        self.valid.add(token)
        body: dict[str, object] = {"access_token": token, "token_type": "Bearer", "expires_in": LIFETIME}
        if session:
            self.sessions_issued += 1
            body["session_token"] = f"s{self.sessions_issued}"
            self.sessions.add(str(body["session_token"]))
        return httpx.Response(200, json=body)

    def answer(self, request: httpx.Request) -> httpx.Response:
        path, auth = request.url.path, request.headers.get("authorization")
        self.seen.append((path, auth))
        if path == "/auth/token":
            if "x-api-key" in request.headers:
                ok = self.api_key_valid and request.headers["x-api-key"] == API_KEY
                return self._access() if ok else error(401, "invalid_api_key")
            session = (auth or "").removeprefix("Bearer ")
            return self._access() if session in self.sessions else error(401, "invalid_session")
        if path == "/auth/login":
            body = json.loads(request.content)
            if (body["email"], body["password"]) != (EMAIL, PASSWORD):
                return error(401, "invalid_credentials")
            if self.two_factor_code is None:
                return self._access(session=True)
            self.challenges_issued += 1
            challenge = f"c{self.challenges_issued}"
            self.challenges.add(challenge)
            return httpx.Response(401, json={"error": {"code": "two_factor_required", "message": "code needed",
                                                       "request_id": "req-2"},
                                             "two_factor": {"token": challenge, "methods": ["totp", "backup_code"],
                                                            "expires_in": 600}})
        if path == "/auth/login/two-factor":
            body = json.loads(request.content)
            self.two_factor_bodies.append(body)
            if body.get("two_factor_token") not in self.challenges:
                return error(401, "two_factor_expired")
            if body.get("code") == self.two_factor_code or body.get("backup_code") in self.backup_codes:
                self.challenges.discard(body["two_factor_token"])
                self.backup_codes.discard(body.get("backup_code", ""))
                return self._access(session=True)
            return error(401, "invalid_code")
        if path.startswith("/auth/api-keys"):
            if (auth or "").removeprefix("Bearer ") not in self.sessions:
                return error(401, "invalid_session")
            return httpx.Response(200, json={"keys": []})
        if not self.accept_tokens or (auth or "").removeprefix("Bearer ") not in self.valid:
            return error(401, "invalid_token")
        if self.queued.get(path):
            return self.queued[path].pop(0)
        if path == "/documents":
            return httpx.Response(200, json=EMPTY_PAGE)
        if path == "/documents/upload":
            return httpx.Response(201, json={"documents": [{"document_id": "d1", "title": "t", "created": True,
                                                            "message": "stored"}], "items": []})
        if path == "/chat":
            return httpx.Response(200, headers={"content-type": "text/event-stream"},
                                  content=b'event: delta\ndata: {"text": "Tar archives."}\n\n')
        return error(404, "not_found")

    def revoke_all(self) -> None:
        """The server stops accepting every access token issued so far (e.g. a key rotated)."""
        self.valid.clear()

    def end_sessions(self) -> None:
        self.sessions.clear()


def sync_transport(services: Services,
                   before: Callable[[httpx.Request], None] | None = None) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if before is not None:
            before(request)
        return services.answer(request)

    return httpx.MockTransport(handle)


def async_transport(services: Services,
                    before: Callable[[httpx.Request], Awaitable[None]] | None = None) -> httpx.MockTransport:
    async def handle(request: httpx.Request) -> httpx.Response:
        if before is not None:
            await before(request)
        return services.answer(request)

    return httpx.MockTransport(handle)
