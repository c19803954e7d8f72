"""Shared fixtures: a real JWKS issuer over HTTP, settings, apps with their lifespan, DB URLs.

Fixtures (session-scoped unless noted):
- `issuer` -> JwksIssuer: serves /api/auth/jwks on 127.0.0.1:<free port>; `mint(sub, **claims)`.
  Shared: don't stop or rotate it; use `isolated_issuer` (function-scoped) for that.
- `settings` -> Settings: tmp data_dir, SQLite, JWKS of `issuer`, generous rate limits.
- `make_settings(**overrides)` (function) -> fresh Settings (own tmp data_dir, `issuer` JWKS).
- `app` / `client` / `runtime`: one app on `settings`, lifespan run (migrations + full runtime).
- `auth_headers(user_id=None, **claims)` (function) -> {"Authorization": "Bearer <jwt>"}.
- `user_id` (function) -> a fresh unique user id (isolation on the shared app).
- `postgres_admin_url` / `pgvector_admin_url` -> admin URLs of the test servers
  (TEST_POSTGRES_URL / TEST_PGVECTOR_URL, see tests/services.py and scripts/test_postgres.py).
- `make_postgres_database()` / `make_pgvector_database()` -> URL of a new uniquely named
  database, dropped at the end of the session.
- `postgres_url` -> this session's own empty database on the test PostgreSQL.
- `pgvector_url` -> this session's own database on the pgvector server.
- `database_url` (params sqlite|postgres) -> None (SQLite) or `postgres_url`.
  A missing PostgreSQL skips with the reason locally and fails under CI=true.
- `db_settings` / `db_app` / `db_client`: like settings/app/client, on `database_url`
  (tests using them run once per database).
- `app_factory` (function): `async with app_factory(settings, runtime=None) as (app, client)`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
import pytest_asyncio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from rag_service.config import Settings
from services import Databases, Servers

ISSUER = "http://auth.test"
AUDIENCE = "rag-service"
JWKS_PATH = "/api/auth/jwks"


# --- JWKS issuer ------------------------------------------------------------------------


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

    # HTTP server
    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{JWKS_PATH}"

    def start(self) -> None:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                if self.path != JWKS_PATH:
                    self.send_error(404)
                    return
                with issuer._lock:
                    issuer.jwks_requests += 1
                body = json.dumps(issuer.jwks()).encode()
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


# --- settings ---------------------------------------------------------------------------


def settings_for(issuer: JwksIssuer, data_dir: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": None,
        "qdrant_url": None,
        "auth_jwks_url": issuer.jwks_url,
        "auth_issuer": issuer.issuer,
        "auth_audience": issuer.audience,
        "embedding_provider": "local",
        "llm_provider": "extractive",
        "gemini_api_key": None,
        "redis_url": None,
        "rate_limit_enabled": True,
        "rate_limit_cheap": "100000/minute",
        "rate_limit_costly": "100000/minute",
        "rate_limit_ingest_bytes": "100000000000/minute",
        "jwks_refetch_min_interval": 10.0,
        "log_level": "WARNING",
    }
    values.update(overrides)
    # _env_file=None and explicit values: the developer's environment never leaks in.
    return Settings(_env_file=None, **values)


@pytest.fixture(scope="session")
def settings(issuer: JwksIssuer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(issuer, tmp_path_factory.mktemp("rag-data"))


@pytest.fixture
def make_settings(issuer: JwksIssuer, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        overrides.setdefault("data_dir", tmp_path_factory.mktemp("rag-data"))
        return settings_for(issuer, **overrides)

    return make


# --- apps -------------------------------------------------------------------------------


@asynccontextmanager
async def running_app(settings: Settings, runtime: Any = None) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """create_app + its lifespan (migrations, runtime) + an httpx client over ASGI."""
    from rag_service.main import create_app

    app = create_app(settings, runtime=runtime)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield app, client


@pytest.fixture
def app_factory() -> Callable[..., Any]:
    return running_app


@pytest_asyncio.fixture(scope="session")
async def _app_and_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with running_app(settings) as pair:
        yield pair


@pytest.fixture(scope="session")
def app(_app_and_client: tuple[Any, httpx.AsyncClient]) -> Any:
    return _app_and_client[0]


@pytest.fixture(scope="session")
def client(_app_and_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return _app_and_client[1]


@pytest.fixture(scope="session")
def runtime(app: Any) -> Any:
    return app.state.runtime


@pytest.fixture
def user_id() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def auth_headers(issuer: JwksIssuer) -> Callable[..., dict[str, str]]:
    def headers(user_id: str | None = None, **claims: Any) -> dict[str, str]:
        token = issuer.mint(user_id or f"user-{uuid.uuid4().hex[:12]}", **claims)
        return {"Authorization": f"Bearer {token}"}

    return headers


# --- databases --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_servers() -> Any:
    servers = Servers()
    yield servers
    servers.stop()


@pytest.fixture(scope="session")
def postgres_admin_url(postgres_servers: Servers) -> str:
    """Admin URL of the test PostgreSQL (TEST_POSTGRES_URL; see scripts/test_postgres.py)."""
    return postgres_servers.postgres()


@pytest.fixture(scope="session")
def pgvector_admin_url(postgres_servers: Servers) -> str:
    """Admin URL of a PostgreSQL with pgvector (TEST_PGVECTOR_URL, always the embedded server)."""
    return postgres_servers.pgvector()


@pytest.fixture(scope="session")
def make_postgres_database(postgres_admin_url: str) -> Any:
    """`make_postgres_database()` -> URL of a new, empty, uniquely named database (dropped at the end)."""
    databases = Databases(postgres_admin_url, "rag_test")
    yield databases.create
    databases.drop_all()


@pytest.fixture(scope="session")
def make_pgvector_database(pgvector_admin_url: str) -> Any:
    """Like `make_postgres_database`, on the pgvector server (the extension is installed)."""
    databases = Databases(pgvector_admin_url, "rag_vec_test")
    yield databases.create
    databases.drop_all()


@pytest.fixture(scope="session")
def postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """URL of this session's own empty database (unique name), dropped at the end, so
    concurrent test runs never see each other's tables."""
    return make_postgres_database()


@pytest.fixture(scope="session")
def pgvector_url(make_pgvector_database: Callable[[], str]) -> str:
    """URL of this session's own database on the pgvector server."""
    return make_pgvector_database()


@pytest.fixture(scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest) -> str | None:
    if request.param == "sqlite":
        return None
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="session")
def db_settings(database_url: str | None, issuer: JwksIssuer,
                tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return settings_for(issuer, tmp_path_factory.mktemp("rag-db-data"), database_url=database_url)


@pytest_asyncio.fixture(scope="session")
async def _db_app_and_client(db_settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    async with running_app(db_settings) as pair:
        yield pair


@pytest.fixture(scope="session")
def db_app(_db_app_and_client: tuple[Any, httpx.AsyncClient]) -> Any:
    return _db_app_and_client[0]


@pytest.fixture(scope="session")
def db_client(_db_app_and_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return _db_app_and_client[1]
