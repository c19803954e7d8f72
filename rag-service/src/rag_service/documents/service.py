"""Documents: save (validate, deduplicate, check quotas, ingest), reindex, move, delete; the
reads (list, get, summary) are `DocumentReads` (reads.py), which this service uses too.

Invariant (checked by tests/test_ingestion_races.py after concurrent upload / reindex /
delete / repair rounds and after a process killed mid-ingestion): every `ready` document
has exactly `chunk_count` vectors, no vector exists without its row, and a delete removes
both. Ingestion runs and deletes keep it through the claim protocol (claims.py); one run
is `indexing.Indexer`, repair is `maintenance.py`.

Every statement made for a caller is scoped to the caller's `Access` (storage/access.py):
a document the caller cannot read is "not found"; one it can read but not change (an
organization's, to a member) is 403 `insufficient_role`. The methods take the caller's
`Access` (or a bare user id: a user in no organization, as the CLI and tests pass).
Documents live in collections (collections/service.py); saving without one uses the
caller's default personal collection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag_service.collections.service import CollectionService, insufficient_role
from rag_service.config import Settings
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.documents import claims
from rag_service.documents.chunking import Chunker, chunker_for
from rag_service.documents.extraction import content_hash, normalize_content
from rag_service.documents.indexing import INGEST_BATCH, Indexer, refetch
from rag_service.documents.quotas import check_quota, estimated_chunks, insert_within_quota
from rag_service.documents.reads import DocumentReads
from rag_service.documents.validation import validate_metadata, validate_title
from rag_service.errors import Conflict, NotFound, PayloadTooLarge, Unprocessable
from rag_service.providers.base import Embedder, embedding_account
from rag_service.storage.access import Access, as_access, document_points, scoped, unscoped
from rag_service.storage.locks import collection_lock, owner_lock
from rag_service.storage.models import DEFAULT_COLLECTION, Document, DocumentStatus, utcnow
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import VectorStore

# Lookups of a concurrently saved/deleted duplicate before giving up with 409.
SAVE_ATTEMPTS = 5


@lru_cache(maxsize=8)
def _shared_chunker(embedder: Embedder, size: int, overlap: int, max_chars: int) -> Chunker:
    # Built once per embedder and sizing (~100 ms, plus its warm token-count cache);
    # services are built per request.
    return chunker_for(embedder, chunk_size_tokens=size, chunk_overlap_tokens=overlap, chunk_max_chars=max_chars)


class DocumentService:
    """Saving, re-indexing, moving and deleting under the claim protocol."""

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
        self._session = session
        self._settings = settings
        # Writes read the caller's document first (moves; telling 403 from 404).
        self.reads = DocumentReads(session, settings)
        self._vector_store = vector_store
        self._sparse_encoder = sparse_encoder
        self._embedder = embedder

    @property
    def chunker(self) -> Chunker:
        return _shared_chunker(self._embedder, self._settings.chunk_size_tokens, self._settings.chunk_overlap_tokens,
                               self._settings.chunk_max_chars)

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

    # --- save ---------------------------------------------------------------------------

    @property
    def collections(self) -> CollectionService:
        return CollectionService(self._session, self._gate)

    async def save(
        self,
        caller: Access | str,
        title: str,
        content: str,
        metadata: dict[str, Any] | None = None,
        source_name: str | None = None,
        mime_type: str = "text/plain",
        collection_id: str = DEFAULT_COLLECTION,
    ) -> tuple[Document, bool]:
        """Store and index a document in a collection the caller may write. Returns
        (document, created); created is False when the collection already holds this
        content (the existing document is returned)."""
        access = as_access(caller)
        owner = await self.collections.writable_owner(access, collection_id)
        title = validate_title(title, self._settings)
        # Normalizing and hashing are linear in a text of up to MAX_DOCUMENT_CHARS (tens of ms
        # for a few MB): off the event loop, for /save-document and uploads alike.
        content, digest = await asyncio.to_thread(self._normalized_with_hash, content)
        metadata = validate_metadata(metadata, self._settings)

        for _ in range(SAVE_ATTEMPTS):
            existing = await self._find_by_hash(access, owner, collection_id, digest)
            if existing is not None and existing.status == DocumentStatus.DELETING:
                raise Conflict("a document with the same content is being deleted; try again in a moment")
            if existing is not None and existing.status != DocumentStatus.FAILED:
                return existing, False
            async with self._gate.slot(access.user_id, cost=estimated_chunks(len(content), self._settings)):
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
                        user_id=access.user_id, owner=owner, collection_id=collection_id, title=title,
                        content=content, content_hash=digest, content_chars=len(content),
                        source_name=source_name, mime_type=mime_type, metadata_=metadata,
                        status=DocumentStatus.INDEXING, chunk_count=0, generation=1, claimed_at=utcnow(),
                    )
                    try:
                        async with self._adding_to(access, collection_id, owner):
                            await insert_within_quota(self._session, document, self._settings, self._gate.locks)
                    except IntegrityError:
                        # The same content was saved concurrently by this user: look again.
                        await self._session.rollback()
                        continue
                    generation = document.generation
                await self._ingest(document, generation)
            return document, True
        raise Conflict("the same content is being saved and deleted concurrently; try again")

    async def _find_by_hash(self, access: Access, owner: str, collection_id: str, digest: str) -> Document | None:
        query = (scoped(select(Document).where(Document.owner == owner, Document.collection_id == collection_id,
                                               Document.content_hash == digest), access, Document)
                 .execution_options(populate_existing=True))  # the loop in `save` must see claims
        found = (await self._session.scalars(query)).first()
        # Ends the read: the connection goes back to the pool before `save` waits for an
        # ingestion slot (up to INGEST_QUEUE_TIMEOUT_SECONDS). Waiting saves holding
        # connections emptied the pool and failed unrelated requests (load test, 20 users).
        await self._session.commit()
        return found

    @asynccontextmanager
    async def _adding_to(self, access: Access, collection_id: str, owner: str) -> AsyncIterator[None]:
        """A transaction that adds a document to a collection: holds the collection's lock
        and checks it still exists (storage/locks.py). Commit inside the block."""
        if collection_id == DEFAULT_COLLECTION:
            yield
            return
        async with collection_lock(self._session, self._gate.locks, collection_id):
            try:
                await self.collections.ensure_writable(access, collection_id, owner)
            except BaseException:
                await self._session.rollback()
                raise
            yield

    async def _refetch(self, document: Document) -> Document:
        return await refetch(self._session, document)

    async def _ingest(self, document: Document, generation: int) -> None:
        indexer = Indexer(self._session, self._vector_store, self._sparse_encoder, self._embedder,
                          self.chunker, batch=self._ingest_batch)
        # The encoder shares its lanes between the accounts whose documents it embeds.
        token = embedding_account.set(document.user_id)
        try:
            await indexer.run(document, generation)
        finally:
            embedding_account.reset(token)

    async def reindex(self, caller: Access | str | None, document_id: str, *, bounded_wait: bool = True) -> Document:
        """Re-chunk and re-embed one document (e.g. after a crash or a model change); the
        caller None is the system (`rag reindex`), which may re-index any document.

        Takes the claim over from any run in progress (that run then changes nothing).
        """
        account = "" if caller is None else as_access(caller).user_id
        async with self._gate.slot(account, bounded=bounded_wait):
            if caller is None:
                generation = await claims.claim_for_system_reindex(self._session, document_id)
                if generation is None:
                    raise NotFound("document not found")
            else:
                access = as_access(caller)
                generation = await claims.claim_for_reindex(self._session, access, document_id)
                if generation is None:
                    await self._refuse_write(access, document_id, "re-indexing this document")
            return await self.resume(document_id, generation)

    async def move(self, caller: Access | str, document_id: str, collection_id: str) -> Document:
        """Put a document into another collection (the caller must be able to change both)
        and re-index it there: its points carry the new owner and collection. 409 when the
        target already holds the same content; 413 `quota_exceeded` when another owner's
        quota has no room for it (it then counts against that owner, no longer the old one)."""
        access = as_access(caller)
        if "\x00" in document_id:
            raise NotFound("document not found")
        document = await self.reads.get(access, document_id)
        owner = await self.collections.writable_owner(access, collection_id)
        await self._session.commit()  # no connection held while waiting for a slot (see _find_by_hash)
        if (document.owner, document.collection_id) == (owner, collection_id):
            return document
        async with self._gate.slot(access.user_id, cost=estimated_chunks(document.content_chars, self._settings)):
            try:
                async with self._adding_to(access, collection_id, owner):
                    async with self._charged_to(owner, document):
                        generation = await claims.claim_for_move(self._session, access, document_id, owner=owner,
                                                                 collection_id=collection_id)
            except IntegrityError:
                await self._session.rollback()
                raise Conflict("the target collection already holds a document with the same content",
                               code="duplicate_in_collection") from None
            if generation is None:
                await self._refuse_write(access, document_id, "moving this document")
            return await self.resume(document_id, generation)

    @asynccontextmanager
    async def _charged_to(self, owner: str, document: Document) -> AsyncIterator[None]:
        """A move to another owner moves the charge: inside the transaction of the move, hold
        the target owner's quota lock and check the document fits its quota (413 otherwise,
        nothing changed). Within one owner nothing is charged anew."""
        if owner == document.owner:
            yield
            return
        async with owner_lock(self._session, self._gate.locks, owner):
            try:
                await check_quota(self._session, owner, document.content_chars, self._settings)
            except BaseException:
                await self._session.rollback()
                raise
            yield

    async def resume(self, document_id: str, generation: int) -> Document:
        """Index a row already claimed with `generation` (by `reindex`, `move` or repair)."""
        # By id alone: if a newer claim took the row over meanwhile, the run finds out from
        # its generation and changes nothing (indexing.Indexer).
        document = (await self._session.scalars(unscoped(
            select(Document).where(Document.id == document_id), claims.BY_CLAIM,
        ))).first()
        if document is None:
            raise NotFound("document not found")
        await self._refetch(document)
        await self._ingest(document, generation)
        return document

    # --- delete -----------------------------------------------------------------------

    async def delete(self, caller: Access | str, document_id: str) -> None:
        """Mark the row `deleting` (revoking any ingestion claim), remove every vector of the
        document, then the row. A failure leaves it `deleting` (listed with that status):
        deleting again, or repair, finishes the job; an ingestion still running finds its
        claim gone and cleans up after itself."""
        if "\x00" in document_id:
            raise NotFound("document not found")
        access = as_access(caller)
        if await claims.claim_for_delete(self._session, access, document_id) is None:
            await self._refuse_write(access, document_id, "deleting this document")
        await self.finish_delete(document_id)

    async def finish_delete(self, document_id: str) -> None:
        """Remove the vectors, then the row, of a document its caller marked `deleting`."""
        await self._vector_store.delete(document_points(document_id))
        await claims.remove_deleted_row(self._session, document_id)

    async def _refuse_write(self, access: Access, document_id: str, what: str) -> NoReturn:
        """After a write scoped to what the caller may change matched nothing: 403 when the
        caller can read the document but its role forbids the change, else 404 (gone, or
        being deleted)."""
        document = await self.reads.get(access, document_id)
        if access.can_write(document.owner):
            raise NotFound("document not found")
        raise insufficient_role(what)


# --- wiring ------------------------------------------------------------------------------


@dataclass(frozen=True)
class DocumentServices:
    """What a `DocumentService` is built from, once per session: for the callers that open
    their own sessions (maintenance, the CLI, the agents' tools)."""

    sessionmaker: async_sessionmaker[AsyncSession]
    vector_store: VectorStore
    sparse_encoder: SparseEncoder
    embedder: Embedder
    settings: Settings
    # None: no concurrency cap, quota checks rely on the database lock alone (one-off tools).
    gate: IngestionGate | None = None

    def service(self, session: AsyncSession) -> DocumentService:
        return DocumentService(session, self.vector_store, self.sparse_encoder, self.embedder, self.settings,
                               gate=self.gate, ingest_batch=self.settings.ingest_batch_size)
