"""System-wide document maintenance: repair of interrupted ingestions and deletions
(start-up and periodic), and rebuilding every document's vectors (`rag reindex`).

These run for all users by design (`storage.access.unscoped`, with the reason); each
document is then handled with its owner's `Access`. They take the `DocumentServices` they
work with (the app's lifespan and the CLI build it from their Runtime).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from rag_service.documents import claims
from rag_service.documents.service import DocumentServices
from rag_service.errors import AppError
from rag_service.storage.access import unscoped
from rag_service.storage.models import Document, DocumentStatus, utcnow

log = logging.getLogger(__name__)


def stale_before(documents: DocumentServices, started_at: datetime | None = None,
                 now: datetime | None = None) -> datetime:
    """Claims whose heartbeat is older than this belong to no live run.

    Always: older than the lease. With a single-process vector store (Qdrant Edge) also
    every claim taken before this process started (`started_at`): the process that took it
    no longer holds the store, so it is not running.
    """
    cutoff = (now or utcnow()) - timedelta(seconds=documents.settings.ingest_claim_lease_seconds)
    if started_at is not None and documents.vector_store.single_process:
        cutoff = max(cutoff, started_at)
    return cutoff


async def repair_interrupted_ingestions(documents: DocumentServices, started_at: datetime | None = None) -> int:
    """Claim and finish every stale `indexing` (re-index) or `deleting` (delete) row, one
    at a time so replicas share the work. Returns how many rows were claimed.
    `started_at`: when this process started (see `stale_before`)."""
    repaired = 0
    cutoff = stale_before(documents, started_at)
    while True:
        async with documents.sessionmaker() as session:
            claim = await claims.claim_stale(session, cutoff)
            if claim is None:
                return repaired
            repaired += 1
            service = documents.service(session)
            try:
                if claim.status == DocumentStatus.DELETING:
                    await service.finish_delete(claim.document_id)
                    log.info("finished deleting document %s", claim.document_id)
                else:
                    await service.resume(claim.document_id, claim.generation)
                    log.info("re-indexed interrupted document %s", claim.document_id)
            except AppError as exc:
                log.warning("could not repair document %s: %s", claim.document_id, exc.message)


async def repair_periodically(documents: DocumentServices, started_at: datetime | None = None) -> None:
    """Run repair every `ingest_repair_interval_seconds` (a replica that died mid-ingestion
    leaves claims that go stale while the others keep running). Cancel to stop."""
    interval = documents.settings.ingest_repair_interval_seconds
    if interval <= 0:
        return
    while True:
        await asyncio.sleep(interval)
        try:
            await repair_interrupted_ingestions(documents, started_at)
        except Exception:  # the database is down: try again next round
            log.exception("periodic repair of interrupted ingestions failed")


@dataclass
class ReindexReport:
    documents: int = 0
    chunks: int = 0
    failed: int = 0


async def reindex_all(documents: DocumentServices,
                      on_progress: Callable[[int, int], None] | None = None) -> ReindexReport:
    """Rebuild every document's vectors from SQL into the current model's collection.

    Each document is claimed like any other ingestion, so this can run while the service
    serves (with a server vector store). `on_progress(done, total)` is called after each.
    """
    report = ReindexReport()
    await documents.vector_store.ensure_collection()
    async with documents.sessionmaker() as session:
        rows = (await session.execute(unscoped(
            select(Document.id)
            .where(Document.status != DocumentStatus.DELETING)
            .order_by(Document.created_at, Document.id),
            "system: `rag reindex` rebuilds the vectors of every owner's documents",
        ))).all()
        await session.commit()
    for done, (document_id,) in enumerate(rows, start=1):
        async with documents.sessionmaker() as session:
            try:
                document = await documents.service(session).reindex(None, document_id, bounded_wait=False)
                report.documents += 1
                report.chunks += document.chunk_count
            except AppError as exc:
                report.failed += 1
                log.warning("could not re-index document %s: %s", document_id, exc.message)
        if on_progress is not None:
            on_progress(done, len(rows))
    return report
