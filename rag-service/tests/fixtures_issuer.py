"""The stand-in for the auth-service: Ed25519 keys, a JWKS served over real HTTP on
127.0.0.1:<free port>, token minting, the account events feed at /auth/events as the contract
between the services says (ACCOUNT-EVENTS contract; `emit` adds an event, `prune` drops the
oldest as retention does), and the API-key exchange (`add_api_key`, `revoke_api_key`) at
/api/auth/api-key/token, as the auth-service answers them (a pytest plugin, registered in
conftest.py). The e2e suite runs the same flows against the real auth-service.

Fixtures:
- `issuer` (session) -> JwksIssuer; `mint(sub, **claims)`. Shared: don't stop or rotate it.
- `isolated_issuer` (function) -> a private JwksIssuer a test may rotate or take down.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

ISSUER = "http://auth.test"
AUDIENCE = "rag-service"
JWKS_PATH = "/api/auth/jwks"
EVENTS_PATH = "/auth/events"
EVENTS_RETENTION_SECONDS = 30 * 86_400
API_KEY_EXCHANGE_PATH = "/api/auth/api-key/token"


class SigningKey:
    def __init__(self, kid: str | None = None) -> None:
        self.kid = kid or uuid.uuid4().hex
        self.private_key = Ed25519PrivateKey.generate()

    @property
    def public_jwk(self) -> dict[str, Any]:
        jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": "EdDSA"}


class JwksIssuer:
    """Stands in for the auth-service: Ed25519 keys, JWKS over real HTTP, token minting."""

    def __init__(self, issuer: str = ISSUER, audience: str = AUDIENCE) -> None:
        self.issuer = issuer
        self.audience = audience
        self.keys: list[SigningKey] = [SigningKey()]
        self.jwks_requests = 0
        # The account events feed: every event emitted, oldest first; those with an id below
        # `oldest_retained` are pruned. Cursors are "<xid>:<id>" strings (opaque to clients).
        self.events: list[dict[str, Any]] = []
        self.oldest_retained = 1
        self.events_token = secrets.token_urlsafe(32)
        # The query of each feed request, and its Authorization header.
        self.events_requests: list[dict[str, str]] = []
        # Set to answer the feed with this document (or status, if an int) instead.
        self.events_answer: Any = None
        # API keys: key -> (owner, scope, orgs claim or None); each exchange's headers, in order.
        self.api_keys: dict[str, tuple[str, str, list[dict[str, str]] | None]] = {}
        self.exchanges: list[dict[str, str]] = []
        # Set to answer the exchange with this status (e.g. 429, 500) instead.
        self.exchange_status: int | None = None
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self.port: int = 0

    # keys
    @property
    def current_key(self) -> SigningKey:
        return self.keys[-1]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk for key in self.keys]}

    def rotate(self, keep_old: bool = True) -> SigningKey:
        """Add a new signing key (new kid); by default the old ones stay published."""
        key = SigningKey()
        self.keys = [*self.keys, key] if keep_old else [key]
        return key

    def claims(self, sub: str, /, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            # What the real auth-service mints (shared-schemas/jwt-claims.schema.json; the e2e
            # suite validates real tokens against it): no email, name or other user data.
            "sub": sub, "sid": f"session-{sub}", "iss": self.issuer, "aud": self.audience,
            "iat": now, "exp": now + 900,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}  # None removes a claim

    def mint(self, sub: str = "user-1", /, *, key: SigningKey | None = None, kid: str | None = "",
             headers: dict[str, Any] | None = None, **claims: Any) -> str:
        """A signed EdDSA token. `kid=None` omits the kid; `kid="x"` overrides it;
        a claim override of None removes that claim (`sub=None` too: sub is positional)."""
        key = key or self.current_key
        header: dict[str, Any] = {"kid": key.kid if kid == "" else kid}
        if header["kid"] is None:
            del header["kid"]
        header.update(headers or {})
        return jwt.encode(self.claims(sub, **claims), key.private_key, algorithm="EdDSA", headers=header)

    # account events
    def emit(self, type: str, *, user_id: str | None = None, organization_id: str | None = None,
             role: str | None = None, at: float | None = None) -> dict[str, Any]:
        """Appends an event to the feed (as the auth-service's triggers do) and returns it;
        `at` in epoch seconds (default now)."""
        with self.lock:
            number = len(self.events) + 1
            event = {"cursor": f"{1000 + number}:{number}", "type": type, "user_id": user_id,
                     "organization_id": organization_id, "role": role,
                     "occurred_at": int((time.time() if at is None else at) * 1000)}
            self.events.append(event)
        return event

    def prune(self, keep_last: int = 0) -> None:
        """Drops every event but the last `keep_last` (retention)."""
        with self.lock:
            self.oldest_retained = max(self.oldest_retained, len(self.events) - keep_last + 1)

    def feed_answer(self, query: dict[str, str]) -> tuple[int, Any]:
        """(status, document) of GET /auth/events as the contract says."""
        try:
            limit = int(query.get("limit", "500"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return 400, error("invalid_limit", "limit must be 1..1000")
        with self.lock:
            retained = self.events[self.oldest_retained - 1:]
            last_id = len(self.events)
            if "after" in query:
                try:
                    after = int(query["after"].split(":")[1])
                except (IndexError, ValueError):
                    return 400, error("invalid_cursor", "bad cursor")
                if after < self.oldest_retained - 1:
                    return 410, error("cursor_expired", "the cursor is older than the oldest retained event")
                candidates = [e for e in retained if int(e["cursor"].split(":")[1]) > after]
            elif "since" in query:
                if not query["since"].isdigit():
                    return 400, error("invalid_cursor", "bad since")
                candidates = [e for e in retained if e["occurred_at"] >= int(query["since"])]
            else:
                candidates = retained
            page = candidates[:limit]
            if page:
                next_cursor = page[-1]["cursor"]
            elif "after" in query:
                next_cursor = query["after"]
            else:
                next_cursor = f"{1000 + last_id}:{last_id}"
        return 200, {"events": page, "next_cursor": next_cursor, "has_more": len(candidates) > limit,
                     "retention_seconds": EVENTS_RETENTION_SECONDS}

    # API keys
    def add_api_key(self, sub: str, scope: str = "write", orgs: list[dict[str, str]] | None = None) -> str:
        key = f"rag_{uuid.uuid4().hex}{uuid.uuid4().hex}"
        self.api_keys[key] = (sub, scope, orgs)
        return key

    def exchanged_token(self, key: str) -> str | None:
        """What the exchange mints for `key`: `iat` not before the owner's latest membership
        change, as the auth-service's issuedAt (so a fresh token is never stale)."""
        owner = self.api_keys.get(key)
        if owner is None:
            return None
        sub, scope, orgs = owner
        with self.lock:
            latest_ms = max((e["occurred_at"] for e in self.events if e["user_id"] == sub
                             and e["type"] in ("member.removed", "member.role_changed")), default=0)
        iat = max(int(time.time()), -(-latest_ms // 1000))
        return self.mint(sub, sid=None, scope=scope, orgs=orgs, iat=iat)

    def revoke_api_key(self, key: str) -> None:
        self.api_keys.pop(key, None)

    def exchanges_of(self, key: str) -> int:
        return sum(1 for headers in self.exchanges if headers.get("x-api-key") == key)

    # HTTP server
    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    @property
    def events_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{EVENTS_PATH}"

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                url = urlsplit(self.path)
                if url.path == EVENTS_PATH:
                    self.feed({k: v[-1] for k, v in parse_qs(url.query).items()})
                    return
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with issuer.lock:
                    issuer.jwks_requests += 1
                self.send_json(issuer.jwks())

            def do_POST(self) -> None:  # noqa: N802 (http.server API)
                if self.path != API_KEY_EXCHANGE_PATH:
                    self.send_error(404)
                    return
                if self.headers.get("content-type", "").split(";")[0] != "application/json":
                    self.send_error(415)  # Better Auth's endpoints take JSON only
                    return
                key = self.headers.get("x-api-key", "")
                with issuer.lock:
                    issuer.exchanges.append({k.lower(): v for k, v in self.headers.items()})
                if issuer.exchange_status is not None:
                    self.send_response(issuer.exchange_status)
                    self.send_header("Retry-After", "7")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                token = issuer.exchanged_token(key)
                if token is None:
                    body = json.dumps({"code": "INVALID_API_KEY", "message": "invalid"}).encode()
                    self.send_response(401)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                # Like the auth-service's exchange: no `sid`, the key's `scope`, the owner's `orgs`.
                self.send_json({"token": token})

            def feed(self, query: dict[str, str]) -> None:
                authorization = self.headers.get("Authorization", "")
                issuer.events_requests.append({**query, "authorization": authorization})
                if not secrets.compare_digest(authorization.encode(), f"Bearer {issuer.events_token}".encode()):
                    self.send_json(error("unauthorized", "the account events feed needs its token"), 401)
                    return
                answer = issuer.events_answer
                if isinstance(answer, int):
                    self.send_json(error("stand_in", "status set by the test"), answer)
                    return
                if answer is not None:
                    self.send_json(answer)
                    return
                status, document = issuer.feed_answer(query)
                self.send_json(document, status)

            def send_json(self, document: Any, status: int = 200) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Take the JWKS endpoint down (connections are refused until `start()`)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "request_id": uuid.uuid4().hex}}


@pytest.fixture(scope="session")
def issuer() -> Any:
    server = JwksIssuer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def isolated_issuer() -> Any:
    """A private issuer a test may rotate or take down."""
    server = JwksIssuer()
    server.start()
    yield server
    server.stop()
