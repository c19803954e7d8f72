"""Replicas that start together on one fresh Postgres database all come up.

Three real `rag serve` processes (own port, own DATA_DIR: Qdrant Edge is single-process per
directory) start at the same moment against one brand-new database. Before migrations ran
under an advisory lock, two of three died with UniqueViolation while creating the schema.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from serve_support import free_port, start_serve, stop, wait_healthy

pytestmark = pytest.mark.postgres

REPLICAS = 3


@pytest.fixture
def fresh_database_url(make_postgres_database: Any) -> str:
    """A new, uniquely named database on the test server (dropped at the end of the session)."""
    return make_postgres_database()


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

    with psycopg.connect(fresh_database_url) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1, versions
