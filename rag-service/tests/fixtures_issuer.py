"""The stand-in for the auth-service: Ed25519 keys, a JWKS served over real HTTP on
127.0.0.1:<free port>, token minting, the membership-change list (`record_change`) at
/api/auth/membership-changes, and the API-key exchange (`add_api_key`, `revoke_api_key`) at
/api/auth/api-key/token, as the auth-service answers them (a pytest plugin, registered in
conftest.py). The e2e suite runs the same flows against the real auth-service.

Fixtures:
- `issuer` (session) -> JwksIssuer; `mint(sub, **claims)`. Shared: don't stop or rotate it.
- `isolated_issuer` (function) -> a private JwksIssuer a test may rotate or take down.
"""

from __future__ import annotations

import hashlib
import json
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
MEMBERSHIP_CHANGES_PATH = "/api/auth/membership-changes"
MEMBERSHIP_RETENTION_SECONDS = 960
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
        # subject hash -> latest change (epoch ms), as the auth-service keeps them.
        self.membership_changes: dict[str, int] = {}
        # The `since` of each membership-changes request (None when absent).
        self.membership_requests: list[int | None] = []
        # Set to answer the membership-changes route with this document (or status, if an int).
        self.membership_answer: Any = None
        # API keys: key -> (owner, scope, orgs claim or None); each exchange's headers, in order.
        self.api_keys: dict[str, tuple[str, str, list[dict[str, str]] | None]] = {}
        self.exchanges: list[dict[str, str]] = []
        # Set to answer the exchange with this status (e.g. 429, 500) instead.
        self.exchange_status: int | None = None
        self._lock = threading.Lock()
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

    # membership changes
    def record_change(self, sub: str, at: float | None = None) -> int:
        """Records a membership change of `sub` at `at` (epoch s, default now); returns its
        `changed_at` as the auth-service publishes it (the first whole second at or after)."""
        at_ms = int((time.time() if at is None else at) * 1000)
        with self._lock:
            key = hashlib.sha256(sub.encode()).hexdigest()
            self.membership_changes[key] = max(at_ms, self.membership_changes.get(key, 0))
        return -(-at_ms // 1000)

    def membership_document(self, since: int | None) -> Any:
        now = int(time.time() * 1000)
        oldest = now - MEMBERSHIP_RETENTION_SECONDS * 1000
        with self._lock:
            rows = sorted(((s, at) for s, at in self.membership_changes.items() if at > max(since or 0, oldest - 1)),
                          key=lambda row: row[1], reverse=True)
        return {"changes": [{"subject": s, "changed_at": -(-at // 1000)} for s, at in rows], "now": now,
                "retention_seconds": MEMBERSHIP_RETENTION_SECONDS, "truncated": False}

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
        with self._lock:
            latest_ms = self.membership_changes.get(hashlib.sha256(sub.encode()).hexdigest(), 0)
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
    def membership_changes_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{MEMBERSHIP_CHANGES_PATH}"

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                url = urlsplit(self.path)
                if url.path == MEMBERSHIP_CHANGES_PATH:
                    self.membership_changes(parse_qs(url.query).get("since", [None])[0])
                    return
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with issuer._lock:
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
                with issuer._lock:
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

            def membership_changes(self, since: str | None) -> None:
                issuer.membership_requests.append(None if since is None else int(since))
                answer = issuer.membership_answer
                if isinstance(answer, int):
                    self.send_error(answer)
                    return
                self.send_json(issuer.membership_document(None if since is None else int(since))
                               if answer is None else answer)

            def send_json(self, document: Any) -> None:
                body = json.dumps(document).encode()
                self.send_response(200)
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
