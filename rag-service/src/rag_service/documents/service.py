"""Documents: save (validate, deduplicate, ingest), list, get, delete, and re-indexing.

Ingestion keeps SQL and the vector store consistent:
  row inserted as `indexing` (committed) -> chunks embedded + BM25-encoded -> upserted in
  batches -> row `ready` with its chunk count.
Any failure after the insert removes the document's partial vectors and marks the row
`failed` with a user-facing error; saving the same content again re-ingests it. Rows left
`indexing` by a crash are re-indexed at start-up (`repair_interrupted_ingestions`).

Every query made for a caller filters on the caller's user id; another user's document
is "not found", never "forbidden".
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import LargeBinary, cast, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from rag_service.config import Settings
from rag_service.documents.chunking import Chunk, Chunker, chunker_for
from rag_service.documents.extraction import content_hash, normalize_content
from rag_service.documents.validation import validate_metadata, validate_title
from rag_service.errors import AppError, NotFound, PayloadTooLarge, ServiceUnavailable, Unprocessable
from rag_service.metrics import INGESTED_CHUNKS
from rag_service.providers.base import Embedder
from rag_service.storage.models import Document, DocumentStatus, utcnow
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint, VectorStore, tenant_filter

if TYPE_CHECKING:
    from rag_service.runtime import Runtime

log = logging.getLogger(__name__)

# Points per embed call and per upsert: large enough for efficient model batches, small
# enough that embedding batch k+1 overlaps the upsert of batch k on long documents.
INGEST_BATCH = 256
# Point ids are uuid5(document id, chunk index): re-indexing overwrites, never duplicates.
POINT_ID_NAMESPACE = uuid.UUID("6f1c2a4e-8d0b-5e4f-9a37-2b8e5d1c0f6a")
INTERNAL_INDEXING_ERROR = "internal error while indexing the document; try again later"


def point_id(document_id: str, chunk_index: int) -> str:
    return str(uuid.uuid5(POINT_ID_NAMESPACE, f"{document_id}:{chunk_index}"))


@dataclass(frozen=True)
class IngestionTotals:
    """One user's documents at a glance: how many in each status, chunks indexed, bytes stored."""

    by_status: dict[str, int]
    chunks: int
    bytes: int

    @property
    def documents(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class DocumentPage:
    documents: list[Document]
    total: int
    page: int
    limit: int

    @property
    def pages(self) -> int:
        return math.ceil(self.total / self.limit) if self.total else 0


@lru_cache(maxsize=8)
def _shared_chunker(embedder: Embedder, size: int, overlap: int) -> Chunker:
    # Built once per embedder and sizing (~100 ms, plus its warm token-count cache);
    # services are built per request.
    return chunker_for(embedder, chunk_size_tokens=size, chunk_overlap_tokens=overlap)


class DocumentService:
    def __init__(
        self,
        session: AsyncSession,
        vector_store: VectorStore,
        sparse_encoder: SparseEncoder,
        embedder: Embedder,
        settings: Settings,
        *,
        ingest_batch: int = INGEST_BATCH,
    ) -> None:
        self._ingest_batch = max(1, ingest_batch)
        self._session = session
        self._vector_store = vector_store
        self._sparse_encoder = sparse_encoder
        self._embedder = embedder
        self._settings = settings

    @property
    def chunker(self) -> Chunker:
        return _shared_chunker(self._embedder, self._settings.chunk_size_tokens, self._settings.chunk_overlap_tokens)

    # --- inputs -------------------------------------------------------------------------

    def prepare_content(self, content: str) -> str:
        """Normalized content, or 413 (too long) / 422 (blank)."""
        limit = self._settings.max_document_chars
        # Checked before normalizing too, so a huge body is refused without copying it.
        if len(content) > 2 * limit or len(normalized := normalize_content(content)) > limit:
            raise PayloadTooLarge(f"content is longer than the limit of {limit} characters")
        if not normalized.strip():
            raise Unprocessable("content must not be empty or only whitespace")
        return normalized

    async def embed_query(self, text: str) -> list[float]:
        """The query embedding of `text` (1..max_embed_chars characters)."""
        if not text or not text.strip():
            raise Unprocessable("text must not be empty")
        if len(text) > self._settings.max_embed_chars:
            raise PayloadTooLarge(f"text is longer than the limit of {self._settings.max_embed_chars} characters")
        [vector] = await self._embedder.embed([text], task="query")
        return vector

    # --- save ---------------------------------------------------------------------------

    async def save(
        self,
        user_id: str,
        title: str,
        content: str,
        metadata: dict[str, Any] | None = None,
        source_name: str | None = None,
        mime_type: str = "text/plain",
    ) -> tuple[Document, bool]:
        """Store and index a document. Returns (document, created); created is False when
        the user already has this content (the existing document is returned)."""
        title = validate_title(title, self._settings)
        content = self.prepare_content(content)
        metadata = validate_metadata(metadata, self._settings)
        digest = content_hash(content)

        existing = await self._find_by_hash(user_id, digest)
        if existing is not None and existing.status != DocumentStatus.FAILED:
            return existing, False
        if existing is not None:
            # An earlier attempt failed: this save is the retry, with the new fields.
            document = existing
            document.title, document.metadata_ = title, metadata
            document.source_name, document.mime_type = source_name, mime_type
            document.status, document.error, document.chunk_count = DocumentStatus.INDEXING, None, 0
            await self._session.commit()
        else:
            document = Document(
                user_id=user_id, title=title, content=content, content_hash=digest,
                source_name=source_name, mime_type=mime_type, metadata_=metadata,
                status=DocumentStatus.INDEXING, chunk_count=0,
            )
            self._session.add(document)
            try:
                await self._session.commit()
            except IntegrityError:
                # The same content was saved concurrently by this user: return that one.
                await self._session.rollback()
                existing = await self._find_by_hash(user_id, digest)
                if existing is None:
                    raise
                return existing, False
        await self._ingest(document, clear_vectors=existing is not None)
        return document, True

    async def _find_by_hash(self, user_id: str, digest: str) -> Document | None:
        query = select(Document).where(Document.user_id == user_id, Document.content_hash == digest)
        return (await self._session.scalars(query)).first()

    # --- ingestion ----------------------------------------------------------------------

    async def _ingest(self, document: Document, *, clear_vectors: bool) -> None:
        """Index a committed `indexing` row; on any failure, leave no vectors and mark it failed."""
        doc_id, user_id = document.id, document.user_id
        try:
            if clear_vectors:
                await self._vector_store.delete(tenant_filter(user_id, document_ids=[doc_id]))
            chunk_count = await self._index(document)
        except BaseException as exc:  # includes cancellation: the row must not stay `indexing`
            await asyncio.shield(self._fail(doc_id, user_id, exc))
            if isinstance(exc, AppError) or not isinstance(exc, Exception):
                raise
            raise ServiceUnavailable(INTERNAL_INDEXING_ERROR) from exc
        marked = await self._session.execute(
            update(Document)
            .where(Document.id == doc_id, Document.user_id == user_id, Document.status == DocumentStatus.INDEXING)
            .values(status=DocumentStatus.READY, chunk_count=chunk_count, error=None, updated_at=utcnow())
        )
        await self._session.commit()
        if marked.rowcount == 0:
            # Deleted (or failed by another worker) while we were indexing: drop our vectors.
            await self._vector_store.delete(tenant_filter(user_id, document_ids=[doc_id]))
            raise NotFound("the document was deleted while it was being indexed")
        INGESTED_CHUNKS.inc(chunk_count)
        await self._session.refresh(document)

    async def _fail(self, doc_id: str, user_id: str, exc: BaseException) -> None:
        log.warning("indexing document %s failed: %r", doc_id, exc, exc_info=not isinstance(exc, AppError))
        message = exc.message if isinstance(exc, AppError) else INTERNAL_INDEXING_ERROR
        try:
            await self._session.rollback()
            await self._vector_store.delete(tenant_filter(user_id, document_ids=[doc_id]))
        except Exception:  # the store is down too: the failed row is retried/re-indexed later
            log.exception("could not remove the partial vectors of document %s", doc_id)
        try:
            await self._session.execute(
                update(Document)
                .where(Document.id == doc_id, Document.user_id == user_id)
                .values(status=DocumentStatus.FAILED, error=message, chunk_count=0, updated_at=utcnow())
            )
            await self._session.commit()
        except Exception:
            log.exception("could not mark document %s as failed", doc_id)

    async def _index(self, document: Document) -> int:
        chunker = self.chunker
        chunks = await asyncio.to_thread(chunker.split, document.content, document.mime_type)
        title = chunker.clip_title(document.title)
        texts = [chunker.embedding_text(title, chunk.text) for chunk in chunks]
        pending: asyncio.Future[None] | None = None
        try:
            step = self._ingest_batch
            for start in range(0, len(chunks), step):
                batch_texts = texts[start : start + step]
                dense, sparse = await asyncio.gather(
                    self._embedder.embed(batch_texts, task="document"),
                    asyncio.to_thread(self._sparse_encoder.encode_documents, batch_texts),
                )
                if len(dense) != len(batch_texts):
                    raise ServiceUnavailable(f"the embedder returned {len(dense)} vectors for {len(batch_texts)} texts")
                points = self._points(document, chunks[start : start + step], dense, sparse)
                if pending is not None:
                    await pending
                # Written while the next batch is being embedded.
                pending = asyncio.ensure_future(self._vector_store.upsert(points))
            if pending is not None:
                await pending
        finally:
            # Never leave a write in flight: cleanup must run after it, not before.
            if pending is not None and not pending.done():
                await asyncio.wait([pending])
            if pending is not None and pending.done() and not pending.cancelled():
                pending.exception()  # retrieved: the caller handles the failure
        return len(chunks)

    def _points(self, document: Document, chunks: list[Chunk], dense: list[list[float]], sparse: list) -> list[ChunkPoint]:
        return [
            ChunkPoint(
                id=point_id(document.id, chunk.index), user_id=document.user_id, document_id=document.id,
                chunk_index=chunk.index, text=chunk.text, title=document.title, start=chunk.start,
                end=chunk.end, dense=vector, sparse=sparse_vector, metadata=document.metadata_ or {},
            )
            for chunk, vector, sparse_vector in zip(chunks, dense, sparse, strict=True)
        ]

    async def reindex(self, user_id: str, document_id: str) -> Document:
        """Re-chunk and re-embed one document (e.g. after a crash or a model change)."""
        document = await self.get(user_id, document_id)
        document.status, document.error = DocumentStatus.INDEXING, None
        await self._session.commit()
        await self._ingest(document, clear_vectors=True)
        return document

    # --- read / delete ------------------------------------------------------------------

    async def list(self, user_id: str, page: int = 1, limit: int = 20) -> DocumentPage:
        if page < 1 or not 1 <= limit <= self._settings.max_page_size:
            raise Unprocessable(f"page must be >= 1 and limit between 1 and {self._settings.max_page_size}")
        total = await self._session.scalar(select(func.count()).select_from(Document).where(Document.user_id == user_id))
        query = (
            select(Document)
            .options(defer(Document.content))  # listing never needs the (large) content
            .where(Document.user_id == user_id)
            .order_by(Document.created_at.desc(), Document.id.desc())
            .offset((page - 1) * limit)
            .limit(limit)
        )
        documents = list((await self._session.scalars(query)).all())
        return DocumentPage(documents=documents, total=total or 0, page=page, limit=limit)

    async def summary(self, user_id: str) -> IngestionTotals:
        """Counts by status, chunks of ready documents, and UTF-8 bytes of stored content (read only)."""
        # SQLite has no octet_length(); the length of a text cast to a blob is its byte count.
        is_sqlite = self._session.get_bind().dialect.name == "sqlite"
        size = func.length(cast(Document.content, LargeBinary)) if is_sqlite else func.octet_length(Document.content)
        query = (
            select(Document.status, func.count(), func.coalesce(func.sum(Document.chunk_count), 0),
                   func.coalesce(func.sum(size), 0))
            .where(Document.user_id == user_id)
            .group_by(Document.status)
        )
        by_status = {status: 0 for status in (DocumentStatus.INDEXING, DocumentStatus.READY, DocumentStatus.FAILED)}
        chunks = total_bytes = 0
        for status, count, status_chunks, status_bytes in (await self._session.execute(query)).all():
            by_status[status] = int(count)
            if status == DocumentStatus.READY:
                chunks += int(status_chunks)
            total_bytes += int(status_bytes)
        return IngestionTotals(by_status=by_status, chunks=chunks, bytes=total_bytes)

    async def get(self, user_id: str, document_id: str) -> Document:
        if "\x00" in document_id:  # never in an id; PostgreSQL would refuse the query (500)
            raise NotFound("document not found")
        query = select(Document).where(Document.id == document_id, Document.user_id == user_id)
        document = (await self._session.scalars(query)).first()
        if document is None:
            raise NotFound("document not found")
        return document

    async def delete(self, user_id: str, document_id: str) -> None:
        """Remove the document's vectors, then its row (a failure leaves it retryable)."""
        document = await self.get(user_id, document_id)
        await self._vector_store.delete(tenant_filter(user_id, document_ids=[document.id]))
        await self._session.delete(document)
        await self._session.commit()


# --- maintenance (start-up, CLI) ----------------------------------------------------------


def service_for(runtime: Runtime, session: AsyncSession) -> DocumentService:
    return DocumentService(session, runtime.vector_store, runtime.sparse_encoder, runtime.embedder, runtime.settings)


async def repair_interrupted_ingestions(runtime: Runtime) -> int:
    """Re-index every document a crash left `indexing`; returns how many were found.

    System-wide by design (it runs at start-up for all users); each document is then
    handled with its owner's id. Failures are logged and leave the row `failed`.
    """
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(
            select(Document.id, Document.user_id).where(Document.status == DocumentStatus.INDEXING)
        )).all()
        service = service_for(runtime, session)
        for document_id, user_id in rows:
            try:
                await service.reindex(user_id, document_id)
                log.info("re-indexed interrupted document %s", document_id)
            except AppError as exc:
                log.warning("could not repair document %s: %s", document_id, exc.message)
    return len(rows)


@dataclass
class ReindexReport:
    documents: int = 0
    chunks: int = 0
    failed: int = 0


async def reindex_all(runtime: Runtime, on_progress: Callable[[int, int], None] | None = None) -> ReindexReport:
    """Rebuild every document's vectors from SQL into the current model's collection.

    `on_progress(done, total)` is called after each document (for a progress bar).
    """
    report = ReindexReport()
    await runtime.vector_store.ensure_collection()
    async with runtime.sessionmaker() as session:
        rows = (await session.execute(
            select(Document.id, Document.user_id).order_by(Document.created_at, Document.id)
        )).all()
        service = service_for(runtime, session)
        for done, (document_id, user_id) in enumerate(rows, start=1):
            try:
                document = await service.reindex(user_id, document_id)
                report.documents += 1
                report.chunks += document.chunk_count
            except AppError as exc:
                report.failed += 1
                log.warning("could not re-index document %s: %s", document_id, exc.message)
            if on_progress is not None:
                on_progress(done, len(rows))
    return report
