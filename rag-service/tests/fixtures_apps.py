"""Settings and apps for the tests (a pytest plugin, registered in conftest.py).

Fixtures:
- `settings` (session) -> Settings: tmp data_dir, SQLite, JWKS of `issuer`, generous rate limits.
- `make_settings(**overrides)` (function) -> fresh Settings (own tmp data_dir, `issuer` JWKS).
- `app` / `client` / `runtime` (session): one app on `settings`, lifespan run (migrations + full runtime).
- `app_factory` (function): `async with app_factory(settings, runtime=None) as (app, client)`.
- `auth_headers(user_id=None, **claims)` (function) -> {"Authorization": "Bearer <jwt>"}.
- `user_id` (function) -> a fresh unique user id (isolation on the shared app).
- `make_verifier(issuer, **overrides)` (function) -> an AccessTokenVerifier on that issuer's
  JWKS (own tmp data_dir), closed after the test.
Helpers for tests that build their own: `settings_for(issuer, data_dir, **overrides)`, `running_app`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fixtures_issuer import JwksIssuer
from rag_service.auth.tokens import AccessTokenVerifier
from rag_service.config import Settings


def settings_for(issuer: JwksIssuer, data_dir: Any, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": None,
        "qdrant_url": None,
        "auth_jwks_url": issuer.jwks_url,
        "auth_issuer": issuer.issuer,
        "auth_audience": issuer.audience,
        "account_events_token": issuer.events_token,
        "auth_events_url": issuer.events_url,
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


@pytest_asyncio.fixture
async def make_verifier(tmp_path: Any) -> AsyncIterator[Callable[..., AccessTokenVerifier]]:
    verifiers: list[AccessTokenVerifier] = []

    def make(issuer: JwksIssuer, clocks: Any = None, **overrides: Any) -> AccessTokenVerifier:
        """`clocks`: an object with `monotonic()` and `wall()` the test moves (default: the real clocks)."""
        timing = {"clock": clocks.monotonic, "wall_clock": clocks.wall} if clocks is not None else {}
        verifier = AccessTokenVerifier(settings_for(issuer, tmp_path, **overrides), **timing)
        verifiers.append(verifier)
        return verifier

    yield make
    for verifier in verifiers:
        await verifier.aclose()
