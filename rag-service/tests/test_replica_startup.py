"""Replicas that start together on one fresh Postgres database all come up.

Three real `rag serve` processes (own port, own DATA_DIR: Qdrant Edge is single-process per
directory) start at the same moment against one brand-new database. Before migrations ran
under an advisory lock, two of three died with UniqueViolation while creating the schema.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

pytestmark = pytest.mark.postgres

REPLICAS = 3
# A liveness deadline, not a speed assertion: three processes share two busy cores.
START_DEADLINE_S = 180


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_replica(database_url: str, data_dir: Path, port: int, jwks_url: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "AUTH_JWKS_URL": jwks_url,
        "EMBEDDING_PROVIDER": "local",
        "LLM_PROVIDER": "extractive",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("QDRANT_URL", "GEMINI_API_KEY", "REDIS_URL", "METRICS_PORT"):
        env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-c", "from rag_service.cli import app; app()", "serve"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def wait_healthy(process: subprocess.Popen, port: int) -> dict[str, Any]:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return {"exited": process.returncode, "stderr": process.stderr.read()[-3000:]}
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return {"status": response.status_code, "body": response.json()}
        except httpx.TransportError:
            time.sleep(0.3)
    return {"timeout": True}


def test_three_replicas_start_together_on_a_fresh_database(fresh_database_url, issuer, tmp_path):
    ports = [free_port() for _ in range(REPLICAS)]
    processes = [
        start_replica(fresh_database_url, tmp_path / f"replica-{i}", port, issuer.jwks_url)
        for i, port in enumerate(ports)
    ]
    try:
        results = [wait_healthy(process, port) for process, port in zip(processes, ports)]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    for result in results:
        assert result.get("status") == 200, result
        assert result["body"]["status"] == "ok", result

    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(fresh_database_url) as conn:
        versions = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    assert len(versions) == 1, versions
