"""Replicas that start together on one fresh Postgres database all come up.

Three real `rag serve` processes (own port, own DATA_DIR: Qdrant Edge is single-process per
directory) start at the same moment against one brand-new database. Before migrations ran
under an advisory lock, two of three died with UniqueViolation while creating the schema.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from serve_support import free_port, start_serve, stop, wait_healthy

pytestmark = pytest.mark.postgres

REPLICAS = 3


@pytest.fixture
def fresh_database_url(postgres_url: str) -> Any:
    """A new, uniquely named database on the test server (the one `postgres_url` uses)."""
    psycopg = pytest.importorskip("psycopg")
    server = make_url(postgres_url).set(query={})
    name = f"rag_replicas_{uuid.uuid4().hex[:12]}"
    admin_url = server.render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_three_replicas_start_together_on_a_fresh_database(fresh_database_url, issuer, tmp_path):
    ports = [free_port() for _ in range(REPLICAS)]
    processes = [
        start_serve(tmp_path / f"replica-{i}", port, issuer.jwks_url, DATABASE_URL=fresh_database_url)
        for i, port in enumerate(ports)
    ]
    try:
        results = [wait_healthy(process, port) for process, port in zip(processes, ports)]
    finally:
        stop(processes)
    for result in results:
        assert result.get("status") == 200, result
        assert result["body"]["status"] == "ok", result

    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(fresh_database_url) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1, versions
