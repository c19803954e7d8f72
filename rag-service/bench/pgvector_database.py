"""A throwaway database on a PostgreSQL with pgvector, for the benchmarks that compare stores."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def pgvector_database(url: str | None) -> AsyncIterator[str]:
    """A new database on a pgvector server (given, TEST_PGVECTOR_URL, or embedded), dropped after."""
    import psycopg

    spec = importlib.util.spec_from_file_location("test_postgres", ROOT / "scripts" / "test_postgres.py")
    assert spec and spec.loader
    test_postgres = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_postgres)
    embedded = None
    admin_url = url or os.environ.get(test_postgres.PGVECTOR_ENV)
    if not admin_url:
        embedded = test_postgres.EmbeddedPostgres.start_new()
        admin_url = embedded.url
    name = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        if embedded is not None:
            embedded.stop()
