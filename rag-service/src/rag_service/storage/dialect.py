"""What SQLite and Postgres do differently, behind one call each, so that business code
never asks which database it runs on (the advisory locks are in locks.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import LargeBinary, Select, cast, func, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

SelectT = TypeVar("SelectT", bound=Select[Any])

# SQLSTATE of "lock not available": Postgres's lock_timeout ran out.
POSTGRES_LOCK_NOT_AVAILABLE = "55P03"


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


def skip_locked(session: AsyncSession, query: SelectT) -> SelectT:
    """`query` locking the rows it reads, skipping rows another transaction locked
    (`FOR UPDATE SKIP LOCKED`) on Postgres; unchanged on SQLite (one writer at a time)."""
    if _dialect(session) == "postgresql":
        return query.with_for_update(skip_locked=True)
    return query


def utf8_bytes(session: AsyncSession, column: Any) -> Any:
    """The UTF-8 byte count of a text column. SQLite has no octet_length(); the length of a
    text cast to a blob is its byte count."""
    if _dialect(session) == "sqlite":
        return func.length(cast(column, LargeBinary))
    return func.octet_length(column)


@asynccontextmanager
async def lock_wait_bounded(session: AsyncSession, timeout_ms: int) -> AsyncIterator[None]:
    """Statements inside wait at most `timeout_ms` for a lock, then fail (`is_lock_timeout`).

    SET LOCAL on Postgres (ends with the transaction); on SQLite the connection's busy
    timeout, put back afterwards (the connection returns to the pool). Neither takes bind
    parameters: the value is an int.
    """
    timeout_ms = int(timeout_ms)
    if _dialect(session) != "sqlite":
        await session.execute(text(f"SET LOCAL lock_timeout = {timeout_ms}"))
        yield
        return
    usual_wait_ms = (await session.execute(text("PRAGMA busy_timeout"))).scalar_one()
    await session.execute(text(f"PRAGMA busy_timeout = {timeout_ms}"))
    try:
        yield
    finally:
        await session.execute(text(f"PRAGMA busy_timeout = {int(usual_wait_ms)}"))


def is_lock_timeout(exc: OperationalError) -> bool:
    """Whether `exc` is a lock wait bounded by `lock_wait_bounded` running out."""
    if getattr(exc.orig, "sqlstate", None) == POSTGRES_LOCK_NOT_AVAILABLE:
        return True
    return "database is locked" in str(exc.orig)  # SQLite's busy timeout ran out
