"""Alembic environment: async engines for SQLite (aiosqlite) and Postgres (psycopg 3).

The URL comes from the config (`rag_service.storage.db.alembic_config` sets it); when the
`alembic` CLI is used with the bundled alembic.ini and no URL, the service settings
(environment variables) decide. A caller may also pass an open sync connection in
`config.attributes["connection"]` (used by tests that compare schemas).
"""

from __future__ import annotations

import asyncio
import concurrent.futures

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from rag_service.storage.db import MIGRATION_LOCK_KEY, is_sqlite, prepare_sqlite_file
from rag_service.storage.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from rag_service.config import get_settings

    return get_settings().sqlalchemy_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":", 1)[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place: batch mode copies the table instead.
        render_as_batch=dialect.startswith("sqlite"),
        compare_type=True,
        literal_binds=connection is None,
    )


def run_migrations_offline() -> None:
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = _url()
    if is_sqlite(url):
        prepare_sqlite_file(url)  # the CLI may run before the data dir exists
    engine = create_async_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    try:
        async with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                # Replicas starting together on one fresh database would all try to create
                # the schema and all but one die with UniqueViolation. A session-level
                # advisory lock on this connection makes them take turns: the first
                # migrates, the others then find the database at head and do nothing.
                # The lock dies with the connection if this process dies.
                await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                await connection.commit()
            try:
                await connection.run_sync(_run_sync)
                await connection.commit()
            finally:
                if postgres:
                    await connection.rollback()
                    await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(_run_async())
        return
    # Called from code running inside an event loop (sync code in an async app or test):
    # asyncio.run cannot nest, so migrate on a private loop in a worker thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool_:
        pool_.submit(lambda: asyncio.run(_run_async())).result()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
