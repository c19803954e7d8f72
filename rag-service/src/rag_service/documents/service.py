"""Documents: save (validate, deduplicate, check quotas, ingest), reindex, delete; the reads
(list, get, summary) are `DocumentReads` (reads.py).

Invariant (checked by tests/test_ingestion_races.py after concurrent upload / reindex /
delete / repair rounds and after a process killed mid-ingestion): every `ready` document
has exactly `chunk_count` vectors, no vector exists without its row, and a delete removes
both. Ingestion runs and deletes keep it through the claim protocol (claims.py); one run
is `indexing.Indexer`, repair is `maintenance.py`.

Every statement made for a caller is scoped to the caller's `Access` (storage/access.py);
another user's document is "not found", never "forbidden". The methods take the caller's
user id, as the routes pass the token's verified `sub`.
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.config import Settings
from rag_service.documents import claims
from rag_service.documents.chunking import Chunker, chunker_for
from rag_service.documents.extraction import content_hash, normalize_content
from rag_service.documents.indexing import INGEST_BATCH, Indexer, refetch
from rag_service.documents.quotas import IngestionGate, insert_within_quota
from rag_service.documents.reads import DocumentReads
from rag_service.documents.validation import validate_metadata, validate_title
from rag_service.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from rag_service.providers.base import Embedder
from rag_service.storage.access import Access, access_filter, scoped
from rag_service.storage.models import Document, DocumentStatus, utcnow
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import VectorStore

if TYPE_CHECKING:
    from rag_service.runtime import Runtime

# Lookups of a concurrently saved/deleted duplicate before giving up with 409.
SAVE_ATTEMPTS = 5


@lru_cache(maxsize=8)
def _shared_chunker(embedder: Embedder, size: int, overlap: int) -> Chunker:
    # Built once per embedder and sizing (~100 ms, plus its warm token-count cache);
    # services are built per request.
    return chunker_for(embedder, chunk_size_tokens=size, chunk_overlap_tokens=overlap)


class DocumentService(DocumentReads):
    """The reads (`DocumentReads`), and saving, re-indexing and deleting under the claim protocol."""

    def __init__(
        self,
        session: AsyncSession,
        vector_store: VectorStore,
        sparse_encoder: SparseEncoder,
        embedder: Embedder,
        settings: Settings,
        *,
        gate: IngestionGate | None = None,
        ingest_batch: int = INGEST_BATCH,
    ) -> None:
        self._ingest_batch = max(1, ingest_batch)
        # Without a shared gate (tests, one-off tools): no concurrency cap, and quota
        # checks rely on the database lock alone.
        self._gate = gate or IngestionGate(0, 0)
        super().__init__(session, settings)
        self._vector_store = vector_store
        self._sparse_encoder = sparse_encoder
        self._embedder = embedder

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

    def _normalized_with_hash(self, content: str) -> tuple[str, str]:
        normalized = self.prepare_content(content)
        return normalized, content_hash(normalized)

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
        # Normalizing and hashing are linear in a text of up to MAX_DOCUMENT_CHARS (tens of ms
        # for a few MB): off the event loop, for /save-document and uploads alike.
        content, digest = await asyncio.to_thread(self._normalized_with_hash, content)
        metadata = validate_metadata(metadata, self._settings)

        access = Access(user_id)
        for _ in range(SAVE_ATTEMPTS):
            existing = await self._find_by_hash(access, digest)
            if existing is not None and existing.status == DocumentStatus.DELETING:
                raise Conflict("a document with the same content is being deleted; try again in a moment")
            if existing is not None and existing.status != DocumentStatus.FAILED:
                return existing, False
            async with self._gate.slot():
                if existing is not None:
                    # An earlier attempt failed: this save is the retry, with the new fields.
                    generation = await claims.claim_failed_for_retry(
                        self._session, access, existing.id, title=title, metadata_=metadata,
                        source_name=source_name, mime_type=mime_type,
                    )
                    if generation is None:  # another save, a reindex or a delete came first
                        continue
                    document = await self._refetch(existing)
                else:
                    document = Document(
                        user_id=user_id, title=title, content=content, content_hash=digest,
                        content_chars=len(content), source_name=source_name, mime_type=mime_type,
                        metadata_=metadata, status=DocumentStatus.INDEXING, chunk_count=0,
                        generation=1, claimed_at=utcnow(),
                    )
                    try:
                        await insert_within_quota(self._session, document, self._settings, self._gate)
                    except IntegrityError:
                        # The same content was saved concurrently by this user: look again.
                        await self._session.rollback()
                        continue
                    generation = document.generation
                await self._ingest(document, generation)
            return document, True
        raise Conflict("the same content is being saved and deleted concurrently; try again")

    async def _find_by_hash(self, access: Access, digest: str) -> Document | None:
        query = (scoped(select(Document).where(Document.content_hash == digest), access, Document)
                 .execution_options(populate_existing=True))  # the loop in `save` must see claims
        return (await self._session.scalars(query)).first()

    async def _refetch(self, document: Document) -> Document:
        return await refetch(self._session, document)

    async def _ingest(self, document: Document, generation: int) -> None:
        indexer = Indexer(self._session, self._vector_store, self._sparse_encoder, self._embedder,
                          self.chunker, batch=self._ingest_batch)
        await indexer.run(document, generation)

    async def reindex(self, user_id: str, document_id: str, *, bounded_wait: bool = True) -> Document:
        """Re-chunk and re-embed one document (e.g. after a crash or a model change).

        Takes the claim over from any run in progress (that run then changes nothing).
        """
        async with self._gate.slot(bounded=bounded_wait):
            generation = await claims.claim_for_reindex(self._session, Access(user_id), document_id)
            if generation is None:
                raise NotFound("document not found")
            return await self.resume(user_id, document_id, generation)

    async def resume(self, user_id: str, document_id: str, generation: int) -> Document:
        """Index a row already claimed with `generation` (by `reindex` or repair)."""
        document = (await self._session.scalars(
            scoped(select(Document).where(Document.id == document_id), Access(user_id), Document)
        )).first()
        if document is None:
            raise NotFound("document not found")
        await self._refetch(document)
        await self._ingest(document, generation)
        return document

    # --- delete -----------------------------------------------------------------------

    async def delete(self, user_id: str, document_id: str) -> None:
        """Mark the row `deleting` (revoking any ingestion claim), remove every vector of the
        document, then the row. A failure leaves it `deleting` (listed with that status):
        deleting again, or repair, finishes the job; an ingestion still running finds its
        claim gone and cleans up after itself."""
        if "\x00" in document_id:
            raise NotFound("document not found")
        if await claims.claim_for_delete(self._session, Access(user_id), document_id) is None:
            raise NotFound("document not found")
        await self.finish_delete(user_id, document_id)

    async def finish_delete(self, user_id: str, document_id: str) -> None:
        await self._vector_store.delete(access_filter(Access(user_id), document_ids=[document_id]))
        await claims.remove_deleted_row(self._session, document_id)


# --- wiring ------------------------------------------------------------------------------


def service_for(runtime: Runtime, session: AsyncSession) -> DocumentService:
    return DocumentService(session, runtime.vector_store, runtime.sparse_encoder, runtime.embedder, runtime.settings,
                           gate=getattr(runtime, "ingestion_gate", None),
                           ingest_batch=runtime.settings.ingest_batch_size)
