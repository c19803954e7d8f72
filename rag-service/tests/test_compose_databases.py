"""The compose Postgres init script, run for real: the rag-service role migrates its own
database and cannot read the auth-service's (docker compose cannot run here, psql can).

Names are unique per run (the script takes them as psql variables; compose uses the
defaults `auth` / `rag`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from fixtures_apps import settings_for
from rag_service.storage.db import run_migrations
from services import missing

pytestmark = pytest.mark.postgres

INIT_DIR = Path(__file__).resolve().parents[2] / "docker" / "postgres-init"
INIT_SCRIPT = INIT_DIR / "10-service-databases.sql"
PGVECTOR_SCRIPT = INIT_DIR / "20-pgvector.sql"  # the pgvector profile's server only


def psql_or_missing() -> str:
    psql = shutil.which("psql")
    if psql is None:
        missing("psql is not installed (apt-get install postgresql-client)")
    return psql


@contextmanager
def initialized_databases(admin_url: str, *scripts: Path, before: Callable[[str], None] = lambda _: None):
    """Runs the init scripts on `admin_url`'s server, as the postgres container would (`before`
    gets the rag database's admin URL between the first script and the others); yields
    `url_for(role, database)`, and drops what it made."""
    psql = psql_or_missing()
    server = make_url(admin_url).set(query={})
    admin_url = server.render_as_string(hide_password=False)
    suffix = uuid.uuid4().hex[:10]
    names = {"auth_db": f"auth_{suffix}", "auth_role": f"auth_{suffix}_role",
             "rag_db": f"rag_{suffix}", "rag_role": f"rag_{suffix}_role"}
    variables = [arg for name, value in names.items() for arg in ("-v", f"{name}={value}")]
    env = {**os.environ, "AUTH_DB_PASSWORD": f"a-{suffix}", "RAG_DB_PASSWORD": f"r-{suffix}"}

    def run(script: Path) -> None:
        result = subprocess.run([psql, "--no-psqlrc", "-X", "-d", admin_url, *variables, "-f", str(script)],
                                env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr

    def url_for(role: str, database: str) -> str:
        return server.set(username=names[role], password=None, database=names[database]) \
            .render_as_string(hide_password=False)

    try:
        run(INIT_SCRIPT)
        before(server.set(database=names["rag_db"]).render_as_string(hide_password=False))
        for script in scripts:
            run(script)
        yield url_for
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            for database in (names["auth_db"], names["rag_db"]):
                admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            for role in (names["auth_role"], names["rag_role"]):
                admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.fixture
def service_databases(postgres_url: str):
    with initialized_databases(postgres_url) as url_for:
        yield url_for


def test_script_refuses_to_run_without_passwords(postgres_url):
    psql = psql_or_missing()
    admin_url = make_url(postgres_url).set(query={}).render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if k not in ("AUTH_DB_PASSWORD", "RAG_DB_PASSWORD")}
    suffix = uuid.uuid4().hex[:10]
    result = subprocess.run([psql, "--no-psqlrc", "-X", "-d", admin_url, "-v", f"auth_role=never_{suffix}",
                             "-f", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "AUTH_DB_PASSWORD is not set" in result.stderr


def test_rag_role_migrates_its_database_and_cannot_reach_the_auth_tables(service_databases, issuer, tmp_path):
    # The auth-service's role creates its tables, as its migrations would.
    with psycopg.connect(service_databases("auth_role", "auth_db"), autocommit=True) as auth:
        auth.execute('CREATE TABLE "account" (id text PRIMARY KEY, password text)')
        auth.execute("""INSERT INTO "account" VALUES ('u1', '$argon2id$secret-hash')""")

    # The rag-service's role runs the rag-service migrations in its own database.
    run_migrations(settings_for(issuer, tmp_path, database_url=service_databases("rag_role", "rag_db")))
    with psycopg.connect(service_databases("rag_role", "rag_db")) as rag:
        assert rag.execute("SELECT count(*) FROM alembic_version").fetchone() == (1,)

    # ...and cannot even connect to the auth-service's database.
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(service_databases("rag_role", "auth_db")).close()
    # Nor can the auth-service's role reach the rag database.
    with pytest.raises(psycopg.OperationalError, match="permission denied"):
        psycopg.connect(service_databases("auth_role", "rag_db")).close()


def _without_vector(rag_admin_url: str) -> None:
    """As in the pgvector image, whose template1 lacks the extension (the test server's has it)."""
    with psycopg.connect(rag_admin_url, autocommit=True) as admin:
        admin.execute("DROP EXTENSION IF EXISTS vector")


def test_pgvector_profile_rag_role_gets_the_extension_it_cannot_create(pgvector_admin_url):
    # Without the profile's second script the rag role cannot create the untrusted extension...
    with initialized_databases(pgvector_admin_url, before=_without_vector) as url_for:
        with psycopg.connect(url_for("rag_role", "rag_db")) as rag:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                rag.execute("CREATE EXTENSION IF NOT EXISTS vector")
    # ...with it, what the pgvector store runs at start-up works under the rag role.
    with initialized_databases(pgvector_admin_url, PGVECTOR_SCRIPT, before=_without_vector) as url_for:
        with psycopg.connect(url_for("rag_role", "rag_db"), autocommit=True) as rag:
            rag.execute("CREATE EXTENSION IF NOT EXISTS vector")
            rag.execute("CREATE TABLE chunks (id int PRIMARY KEY, dense vector(3) NOT NULL, sparse sparsevec(10))")
            rag.execute("INSERT INTO chunks VALUES (1, '[1,0,0]', '{1:1}/10')")
            assert rag.execute("SELECT id FROM chunks ORDER BY dense <=> '[1,0,0]' LIMIT 1").fetchone() == (1,)
