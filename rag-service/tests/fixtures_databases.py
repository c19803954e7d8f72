"""PostgreSQL databases for the tests, and the apps that run once per database
(a pytest plugin, registered in conftest.py).

Fixtures (session):
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
- `own_database_url` (function): like `database_url`, but on PostgreSQL a new database of the
  test's own, for tests whose rows another party must not touch (`db_app`'s periodic ingestion
  repair claims any stale row in `postgres_url`).
- `db_sessionmaker`: the service's own sessionmaker on the migrated `database_url`
  database, for tests of the SQL layer without an app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
import pytest_asyncio

from fixtures_apps import running_app, settings_for
from fixtures_issuer import JwksIssuer
from rag_service.config import Settings
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from services import Databases, Servers


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


@pytest.fixture
def own_database_url(database_url: str | None, request: pytest.FixtureRequest) -> str | None:
    if database_url is None:
        return None  # SQLite: make_settings gives every test its own data dir, so its own file
    return request.getfixturevalue("make_postgres_database")()


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


@pytest_asyncio.fixture(scope="session")
async def db_sessionmaker(db_settings: Settings) -> AsyncIterator[Any]:
    await asyncio.to_thread(run_migrations, db_settings)
    engine, sessionmaker = create_engine_and_sessionmaker(db_settings)
    yield sessionmaker
    await engine.dispose()
