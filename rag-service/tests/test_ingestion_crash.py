"""A process killed with SIGKILL mid-ingestion: after a restart the document is `ready`
with exactly its vectors (start-up repair claims the dead process's stale claim).

The killed process is a real `rag ingest` subprocess on the same database and Qdrant Edge
directory; the restart is the service's own start-up (migrations, runtime, repair) in
this process, once the killed one is gone (Edge is single-process).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from ingestion_support import SMALL_CHUNKS, check_invariant, new_user, paragraphs
from rag_service.storage.access import Access, scoped
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.models import Document, DocumentStatus

CHUNKS = 60
# Polling bound while the subprocess loads the model and indexes (not a timing assertion).
MAX_POLLS = 3_000


def ingest_process(settings, file: Path, user: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "GEMINI_API_KEY"}}
    env.update({
        "DATA_DIR": str(settings.data_dir), "EMBEDDING_PROVIDER": "local", "LLM_PROVIDER": "extractive",
        "INGEST_BATCH_SIZE": "1", "CHUNK_SIZE_TOKENS": str(settings.chunk_size_tokens),
        "CHUNK_OVERLAP_TOKENS": str(settings.chunk_overlap_tokens), "LOG_LEVEL": "WARNING",
    })
    if settings.database_url:
        env["DATABASE_URL"] = settings.database_url
    command = [sys.executable, "-c", "from rag_service.cli import app; app()",
               "ingest", str(file), "--user-id", user]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def wait_until_mid_ingestion(sessionmaker, user: str, process: subprocess.Popen, log: Path) -> None:
    """Until the run has written a batch and heartbeated (claimed_at moved past created_at)."""
    for _ in range(MAX_POLLS):
        assert process.poll() is None, "ingest ended before it was killed:\n" + log.read_text()[-2000:]
        async with sessionmaker() as session:
            row = (await session.execute(
                scoped(select(Document.status, Document.claimed_at, Document.created_at), Access(user), Document)
            )).first()
        if row is not None and row.status == DocumentStatus.INDEXING and row.claimed_at > row.created_at:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the ingestion never got under way:\n" + log.read_text()[-2000:])


async def test_sigkill_mid_ingestion_then_restart_repairs(database_url, make_settings, app_factory, tmp_path) -> None:
    settings = make_settings(database_url=database_url, **SMALL_CHUNKS)
    await asyncio.to_thread(run_migrations, settings)
    user = new_user()
    file = tmp_path / "long.txt"
    file.write_text(paragraphs("crash", CHUNKS))
    log = tmp_path / "ingest.log"
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    try:
        process = ingest_process(settings, file, user, log)
        try:
            await wait_until_mid_ingestion(sessionmaker, user, process, log)
        finally:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
        async with sessionmaker() as session:
            [(status, chunk_count)] = (await session.execute(
                scoped(select(Document.status, Document.chunk_count), Access(user), Document)
            )).all()
        assert (status, chunk_count) == (DocumentStatus.INDEXING, 0)
    finally:
        await engine.dispose()

    # Restart: the service's start-up repairs the document before serving.
    async with app_factory(settings) as (app, client):
        runtime = app.state.runtime
        statuses = await check_invariant(runtime, [user])
        assert list(statuses.values()) == [DocumentStatus.READY]
        async with runtime.sessionmaker() as session:
            [document] = (await session.scalars(scoped(select(Document), Access(user), Document))).all()
        assert document.chunk_count >= CHUNKS // 2
        assert document.generation == 2  # the dead run's claim (1) was taken over once
