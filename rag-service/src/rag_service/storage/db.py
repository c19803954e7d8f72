"""SQL engine (SQLite via aiosqlite, or Postgres via psycopg 3), migrations and health.

The Alembic configuration is built in code from the package's own migration folder, so
`run_migrations(settings)` works from any working directory and from an installed wheel.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from rag_service.config import Settings
from rag_service.storage.access import ScopedSession

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# pg_advisory_lock key held while migrating (any fixed bigint; "rag-migr" in ASCII), so
# replicas starting together migrate one after another (see migrations/env.py).
MIGRATION_LOCK_KEY = 0x7261672D6D696772


class _DropResultRows(logging.Filter):
    """SQLAlchemy logs every fetched row at DEBUG ("Row %r"): document texts, titles and
    questions. hide_parameters covers bound parameters only, so rows are dropped here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith("Row "))


_SQLALCHEMY_ENGINE_LOGGER = logging.getLogger("sqlalchemy.engine.Engine")
if not any(isinstance(f, _DropResultRows) for f in _SQLALCHEMY_ENGINE_LOGGER.filters):
    _SQLALCHEMY_ENGINE_LOGGER.addFilter(_DropResultRows())


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def prepare_sqlite_file(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers run while one writer writes; foreign keys are off by default in SQLite.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.close()
    return on_connect


def create_engine(settings: Settings) -> AsyncEngine:
    url = settings.sqlalchemy_url
    if is_sqlite(url):
        prepare_sqlite_file(url)
        busy_timeout_ms = settings.sqlite_busy_timeout_ms
        engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": busy_timeout_ms / 1000})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        return engine
    return create_async_engine(
        url,
        # Bound parameters are users' texts, titles and questions: never in logs or in
        # exception messages (which end up in logs).
        hide_parameters=True,
        pool_pre_ping=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_pool_max_overflow,
        connect_args={"connect_timeout": settings.database_connect_timeout_seconds},
    )


def create_engine_and_sessionmaker(
    settings: Settings,
) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings)
    # expire_on_commit=False: services return ORM objects after committing. ScopedSession
    # refuses statements on owned tables built without an access scope (storage/access.py).
    return engine, async_sessionmaker(engine, expire_on_commit=False, sync_session_class=ScopedSession)


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # env.py reads the URL from here; '%' must be escaped for ConfigParser interpolation.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def run_migrations(settings: Settings, revision: str = "head") -> None:
    """Upgrade the database to `revision` (sync; call it in a thread from async code)."""
    url = settings.sqlalchemy_url
    if is_sqlite(url):
        prepare_sqlite_file(url)
    command.upgrade(alembic_config(url), revision)


def downgrade_migrations(settings: Settings, revision: str = "base") -> None:
    command.downgrade(alembic_config(settings.sqlalchemy_url), revision)


async def check_database(engine: AsyncEngine, timeout_seconds: float) -> bool:
    """True when a trivial query succeeds within `timeout_seconds`."""
    try:
        async with asyncio.timeout(timeout_seconds):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        return True
    except Exception as exc:  # any failure means "not healthy"; the reason goes to the log
        log.warning("database health check failed: %r", exc)
        return False


def describe_database_error(exc: BaseException) -> str:
    """What a log may say about a database error: its type and SQLSTATE, never its message
    (Postgres puts offending values in messages and DETAIL lines, e.g. unique keys)."""
    orig = getattr(exc, "orig", None) or exc
    sqlstate = getattr(orig, "sqlstate", None)
    name = type(orig).__name__ if orig is exc else f"{type(exc).__name__}({type(orig).__name__})"
    return f"{name} sqlstate={sqlstate}" if sqlstate else name


def is_database_unavailable(exc: BaseException) -> bool:
    """Errors meaning "the database cannot be reached/used right now" (-> 503, not 500)."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))
