"""One ingestion run of one document under its claim (the protocol and its SQL side are
`claims.py`).

chunks -> embedded + BM25-encoded in batches -> upserted (batch k while batch k+1 is
embedded) -> heartbeat after each batch -> older generations' points removed ->
conditional `ready`. Any failure while holding the claim removes this run's points and
marks the row `failed`; a lost claim changes nothing but this run's own points.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.documents import claims
from rag_service.documents.chunking import Chunk, Chunker
from rag_service.errors import AppError, NotFound, ServiceUnavailable
from rag_service.metrics import INGESTED_CHUNKS
from rag_service.providers.base import Embedder
from rag_service.storage.models import Document, DocumentStatus
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.access import document_points, unscoped
from rag_service.storage.vectors import ChunkPoint, VectorStore

log = logging.getLogger(__name__)

# Points per embed call and per upsert: large enough for efficient model batches, small
# enough that embedding batch k+1 overlaps the upsert of batch k on long documents.
INGEST_BATCH = 256
# Point ids are uuid5(document id, generation, chunk index): two runs of one document never
# write the same point, so one run's cleanup cannot remove the other's vectors.
POINT_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8d0b-5e4f-9a37-2b8e5d1c0f6a")
INTERNAL_INDEXING_ERROR = "internal error while indexing the document; try again later"


# Tasks running an ingestion in this process: shutdown waits for them to release their
# claims (after cancelling them) before closing the database (main.py).
RUNNING: set[asyncio.Task] = set()


async def wait_for_running(timeout: float) -> int:
    """Wait up to `timeout` for the ingestions in progress to end; returns how many remain."""
    tasks = set(RUNNING)
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    return len(pending)


def point_id(document_id: str, chunk_index: int, generation: int = 0) -> str:
    """Generation 0 is the id scheme of points written before claims existed."""
    name = f"{document_id}:{chunk_index}" if generation == 0 else f"{document_id}:{generation}:{chunk_index}"
    return str(uuid.uuid5(POINT_ID_NAMESPACE, name))


async def refetch(session: AsyncSession, document: Document) -> Document:
    """The row as it is now (claims are plain UPDATEs the identity map does not see)."""
    query = unscoped(select(Document).where(Document.id == document.id),
                     "the row this run already holds: found under the caller's scope, or claimed")
    query = query.execution_options(populate_existing=True)
    current = (await session.scalars(query)).first()
    await session.commit()
    if current is None:
        raise NotFound("the document was deleted while it was being indexed")
    return current


class ClaimLost(Exception):
    """This run's ingestion claim was taken over (or the row deleted) while it ran."""


class Indexer:
    def __init__(self, session: AsyncSession, vector_store: VectorStore, sparse_encoder: SparseEncoder,
                 embedder: Embedder, chunker: Chunker, *, batch: int = INGEST_BATCH) -> None:
        self.session = session
        self.vector_store = vector_store
        self.sparse_encoder = sparse_encoder
        self.embedder = embedder
        self.chunker = chunker
        self.batch = max(1, batch)

    async def run(self, document: Document, generation: int) -> None:
        task = asyncio.current_task()
        if task is not None:
            RUNNING.add(task)
        try:
            await self._run(document, generation)
        finally:
            RUNNING.discard(task)

    async def _run(self, document: Document, generation: int) -> None:
        """Index a row this run has claimed with `generation` (see the module docstring).

        Won: the row is `ready` with exactly its chunks. Lost (another run took the claim):
        nothing in SQL changes, only this run's points are removed, and `document` is
        refreshed to the row as it stands. Row deleted meanwhile: NotFound. Failed while
        holding the claim: no vectors, row `failed`, the error is raised.
        """
        doc_id = document.id
        older = document_points(doc_id, below=generation)
        try:
            # Points of older generations (an interrupted run, the previous index) are garbage
            # now; removed again at the end for any run that lost its claim mid-write.
            await self.vector_store.delete(older)
            chunk_count = await self._index(document, generation)
            await self.vector_store.delete(older)
        except ClaimLost:
            await asyncio.shield(self._after_lost_claim(document, generation))
            return
        except asyncio.CancelledError:
            # Interrupted (the process is stopping): the text is stored, so the row stays
            # `indexing` with its claim released; repair (the next start, or the periodic pass
            # of another replica) re-indexes it.
            await asyncio.shield(self._release(doc_id, generation))
            raise
        except BaseException as exc:  # the row must not stay `indexing`
            await asyncio.shield(self._fail(doc_id, generation, exc))
            if isinstance(exc, AppError) or not isinstance(exc, Exception):
                raise
            raise ServiceUnavailable(INTERNAL_INDEXING_ERROR) from exc
        if not await claims.finish_ready(self.session, doc_id, generation, chunk_count):
            await self._after_lost_claim(document, generation)
            return
        INGESTED_CHUNKS.inc(chunk_count)
        await refetch(self.session, document)

    async def _after_lost_claim(self, document: Document, generation: int) -> None:
        state = await claims.current_state(self.session, document.id)
        if state is None or state[1] == DocumentStatus.DELETING:
            # Deleted (or being deleted): nothing may keep vectors of it, whoever wrote them.
            await self.vector_store.delete(document_points(document.id))
            raise NotFound("the document was deleted while it was being indexed")
        # Only points at or below our generation: the claim holder's (newer) points stay.
        await self.vector_store.delete(document_points(document.id, below=generation + 1))
        log.info("document %s: claim %d superseded by %d", document.id, generation, state[0])
        await refetch(self.session, document)

    async def _release(self, doc_id: str, generation: int) -> None:
        try:
            await self.session.rollback()
            released = await claims.release_for_repair(self.session, doc_id, generation)
        except Exception:  # the database is gone too: the claim goes stale after its lease
            log.exception("could not release the claim of interrupted document %s", doc_id)
            return
        if released:
            log.warning("indexing document %s interrupted; left for repair", doc_id)

    async def _fail(self, doc_id: str, generation: int, exc: BaseException) -> None:
        # Type and stack only: messages of driver and reader errors can quote document text.
        stack = "" if isinstance(exc, AppError) else "".join(traceback.format_tb(exc.__traceback__))
        log.warning("indexing document %s failed: %s\n%s", doc_id, type(exc).__name__, stack)
        message = exc.message if isinstance(exc, AppError) else INTERNAL_INDEXING_ERROR
        try:
            await self.session.rollback()
            # Safe whether or not we still hold the claim: a newer claim's points are above.
            await self.vector_store.delete(document_points(doc_id, below=generation + 1))
        except Exception:  # the store is down too: the row is retried/re-indexed later
            log.exception("could not remove the partial vectors of document %s", doc_id)
        try:
            await claims.finish_failed(self.session, doc_id, generation, message)
        except Exception:
            log.exception("could not mark document %s as failed", doc_id)

    async def _index(self, document: Document, generation: int) -> int:
        chunker = self.chunker
        chunks = await asyncio.to_thread(chunker.split, document.content, document.mime_type)
        title = chunker.clip_title(document.title)
        texts = [chunker.embedding_text(title, chunk.text) for chunk in chunks]
        pending: asyncio.Future[None] | None = None
        try:
            step = self.batch
            for start in range(0, len(chunks), step):
                batch_texts = texts[start : start + step]
                dense, sparse = await asyncio.gather(
                    self.embedder.embed(batch_texts, task="document"),
                    asyncio.to_thread(self.sparse_encoder.encode_documents, batch_texts),
                )
                if len(dense) != len(batch_texts):
                    raise ServiceUnavailable(f"the embedder returned {len(dense)} vectors for {len(batch_texts)} texts")
                points = self._points(document, generation, chunks[start : start + step], dense, sparse)
                if pending is not None:
                    await pending
                    # The heartbeat keeps the claim fresh and stops a run that lost it early.
                    if not await claims.heartbeat(self.session, document.id, generation):
                        raise ClaimLost
                # Written while the next batch is being embedded.
                pending = asyncio.ensure_future(self.vector_store.upsert(points))
            if pending is not None:
                await pending
        finally:
            # Never leave a write in flight: cleanup must run after it, not before.
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            if pending is not None and pending.done() and not pending.cancelled():
                pending.exception()  # retrieved: the caller handles the failure
        return len(chunks)

    def _points(self, document: Document, generation: int, chunks: list[Chunk], dense: list[list[float]],
                sparse: list) -> list[ChunkPoint]:
        return [
            ChunkPoint(
                id=point_id(document.id, chunk.index, generation), owner=document.owner,
                collection_id=document.collection_id, document_id=document.id, chunk_index=chunk.index, text=chunk.text, title=document.title,
                start=chunk.start, end=chunk.end, dense=vector, sparse=sparse_vector,
                metadata=document.metadata_ or {}, generation=generation,
            )
            for chunk, vector, sparse_vector in zip(chunks, dense, sparse, strict=True)
        ]
