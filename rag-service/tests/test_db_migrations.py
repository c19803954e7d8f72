"""Alembic migrations on fresh SQLite and fresh Postgres: the result matches the models
exactly (autogenerate finds nothing), downgrade/upgrade round-trips, and the engine's
SQLite settings (WAL, foreign keys) are really on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fixtures_apps import settings_for
from rag_service.config import Settings
from rag_service.storage.access import unscoped
from rag_service.storage.db import (
    check_database,
    create_engine,
    create_engine_and_sessionmaker,
    downgrade_migrations,
    run_migrations,
)
from rag_service.storage.models import Base, Conversation, Message


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fresh_settings(request: pytest.FixtureRequest, issuer: Any, tmp_path: Path):
    """Settings on an empty database: a new SQLite file, or a new Postgres database."""
    (tmp_path / "data").mkdir()
    if request.param == "sqlite":
        yield settings_for(issuer, tmp_path / "data")
        return
    # A new database per test: migrations run on a truly empty one.
    make_database = request.getfixturevalue("make_postgres_database")
    yield settings_for(issuer, tmp_path / "data", database_url=make_database())


def sync_url(settings: Any) -> str:
    # The same database through a sync driver, for alembic's comparison and inspection.
    return settings.sqlalchemy_url.replace("+aiosqlite", "")


def schema_diff(settings: Any) -> list[Any]:
    engine = sa.create_engine(sync_url(settings))
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def table_names(settings: Any) -> set[str]:
    engine = sa.create_engine(sync_url(settings))
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_on_a_fresh_database_matches_the_models(fresh_settings):
    assert table_names(fresh_settings) <= {"alembic_version"}
    run_migrations(fresh_settings)
    assert {"documents", "conversations", "messages", "alembic_version"} <= table_names(fresh_settings)
    assert schema_diff(fresh_settings) == []


def test_migrations_are_idempotent_and_round_trip(fresh_settings):
    run_migrations(fresh_settings)
    run_migrations(fresh_settings)  # already at head: no-op, no error
    downgrade_migrations(fresh_settings, "base")
    assert table_names(fresh_settings) & {"documents", "conversations", "messages"} == set()
    run_migrations(fresh_settings)
    assert schema_diff(fresh_settings) == []


def test_schema_diff_detects_a_drift(fresh_settings):
    """The comparison used above can fail: a missing column is reported."""
    run_migrations(fresh_settings)
    engine = sa.create_engine(sync_url(fresh_settings))
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP INDEX ix_documents_status"))
    finally:
        engine.dispose()
    diff = schema_diff(fresh_settings)
    assert any(entry[0] == "add_index" for entry in diff), diff


async def test_engine_enforces_constraints_and_cascades(fresh_settings):
    run_migrations(fresh_settings)
    engine, sessionmaker = create_engine_and_sessionmaker(fresh_settings)
    try:
        assert await check_database(engine, 3.0)
        async with sessionmaker() as session:
            conversation = Conversation(user_id="u1", title="t")
            session.add(conversation)
            await session.flush()
            session.add(Message(conversation_id=conversation.id, user_id="u1", position=0, role="user", content="hi"))
            await session.commit()
            # Deleting the parent row in SQL (not via the ORM) must cascade in the database.
            await session.execute(unscoped(sa.delete(Conversation).where(Conversation.id == conversation.id),
                                           "test: the schema's cascade, below any service"))
            await session.commit()
            remaining = await session.scalar(unscoped(sa.select(sa.func.count()).select_from(Message),
                                                      "test: every message row"))
            assert remaining == 0
            # A message pointing at no conversation violates the foreign key.
            session.add(Message(conversation_id=str(uuid.uuid4()), user_id="u1", position=0, role="user", content="x"))
            with pytest.raises(sa.exc.IntegrityError):
                await session.commit()
    finally:
        await engine.dispose()


async def test_sqlite_uses_wal_and_foreign_keys(issuer, tmp_path):
    settings = settings_for(issuer, tmp_path / "nested" / "dir")  # data_dir is created
    engine, _ = create_engine_and_sessionmaker(settings)
    try:
        async with engine.connect() as connection:
            assert (await connection.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await connection.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
            assert (await connection.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000
    finally:
        await engine.dispose()
    assert (tmp_path / "nested" / "dir" / "rag.db").exists()


@pytest.mark.parametrize("url", [
    "postgresql+psycopg://postgres@127.0.0.1:1/nothing",
    "sqlite+aiosqlite:////proc/no-such-dir/rag.db",
])
async def test_check_database_is_false_when_unreachable(url):
    engine = create_engine(Settings(database_url=url)) if url.startswith("postgresql") else sa.ext.asyncio.create_async_engine(url)
    try:
        assert await check_database(engine, 3.0) is False
    finally:
        await engine.dispose()


def test_documents_saved_before_collections_stay_their_uploaders(fresh_settings):
    """0003 on a database with documents: each is its uploader's, in the default collection,
    and deduplication is per collection from then on."""
    run_migrations(fresh_settings, "0002_ingestion_claims")
    engine = sa.create_engine(sync_url(fresh_settings))
    row = {"user_id": "alice", "title": "t", "content": "c", "content_hash": "h" * 64, "mime_type": "text/plain",
           "metadata": "{}", "status": "ready", "chunk_count": 1, "created_at": "2026-01-01T00:00:00+00:00",
           "updated_at": "2026-01-01T00:00:00+00:00"}
    insert = sa.text("INSERT INTO documents (id, user_id, title, content, content_hash, mime_type, metadata, status,"
                     " chunk_count, created_at, updated_at) VALUES (:id, :user_id, :title, :content, :content_hash,"
                     " :mime_type, CAST(:metadata AS JSON), :status, :chunk_count, :created_at, :updated_at)")
    try:
        with engine.begin() as connection:
            connection.execute(insert, {**row, "id": "d1"})
        run_migrations(fresh_settings)
        with engine.begin() as connection:
            stored = connection.execute(sa.text("SELECT owner, collection_id FROM documents WHERE id = 'd1'")).one()
            assert tuple(stored) == ("alice", "personal")
            # The same content in another collection is a new document; in the same one, refused.
            connection.execute(sa.text("INSERT INTO documents (id, user_id, owner, collection_id, title, content,"
                                       " content_hash, mime_type, metadata, status, chunk_count, created_at,"
                                       " updated_at) SELECT 'd2', user_id, owner, 'c1', title, content, content_hash,"
                                       " mime_type, metadata, status, chunk_count, created_at, updated_at"
                                       " FROM documents WHERE id = 'd1'"))
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO documents (id, user_id, owner, collection_id, title, content,"
                                       " content_hash, mime_type, metadata, status, chunk_count, created_at,"
                                       " updated_at) SELECT 'd3', user_id, owner, collection_id, title, content,"
                                       " content_hash, mime_type, metadata, status, chunk_count, created_at,"
                                       " updated_at FROM documents WHERE id = 'd1'"))
    finally:
        engine.dispose()
    assert schema_diff(fresh_settings) == []
