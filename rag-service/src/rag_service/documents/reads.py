"""Reading a caller's documents: one page of the listing, one document, the summary.

Read only, and scoped to the caller's `Access` like every statement (storage/access.py):
another user's document is "not found". `DocumentService` (service.py) makes the writes.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from rag_service.config import Settings
from rag_service.documents.quotas import Usage, limits_of
from rag_service.errors import NotFound, Unprocessable
from rag_service.paging import Page
from rag_service.storage.access import Access, as_access, scoped
from rag_service.storage.dialect import utf8_bytes
from rag_service.storage.models import DEFAULT_COLLECTION, Document, DocumentStatus


@dataclass(frozen=True)
class IngestionTotals:
    """The documents a caller may read at a glance: how many in each status, chunks indexed,
    bytes stored; and the quota usage of every owner the caller may read (its own first)."""

    by_status: dict[str, int]
    chunks: int
    bytes: int
    usages: list[Usage]

    @property
    def usage(self) -> Usage:
        """The caller's own (personal collections)."""
        return self.usages[0]

    @property
    def documents(self) -> int:
        return sum(self.by_status.values())


@dataclass(frozen=True)
class DocumentPage(Page):
    documents: list[Document]


class DocumentReads:
    """One session's reads of the documents a caller may see."""

    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self._session = session
        self._settings = settings

    async def list(self, caller: Access | str, page: int = 1, limit: int = 20,
                   collection_id: str | None = None) -> DocumentPage:
        """One page of the documents the caller may read, newest first; `collection_id`
        narrows it to one collection (one the caller cannot read lists nothing)."""
        if page < 1 or not 1 <= limit <= self._settings.max_page_size:
            raise Unprocessable(f"page must be >= 1 and limit between 1 and {self._settings.max_page_size}")
        access = as_access(caller)
        conditions = []
        if collection_id is not None:
            conditions.append(Document.collection_id == collection_id)
            if collection_id == DEFAULT_COLLECTION:  # the caller's own default collection
                conditions.append(Document.owner == access.user_id)
        total = await self._session.scalar(
            scoped(select(func.count()).select_from(Document).where(*conditions), access, Document))
        query = (
            scoped(select(Document).where(*conditions), access, Document)
            .options(defer(Document.content))  # listing never needs the (large) content
            .order_by(Document.created_at.desc(), Document.id.desc())
            .offset((page - 1) * limit)
            .limit(limit)
        )
        documents = list((await self._session.scalars(query)).all())
        return DocumentPage(documents=documents, total=total or 0, page=page, limit=limit)

    async def summary(self, caller: Access | str) -> IngestionTotals:
        """Counts by status, chunks of ready documents, and UTF-8 bytes of stored content of
        the documents the caller may read; the quota usage of each owner it may read."""
        size = utf8_bytes(self._session, Document.content)
        access = as_access(caller)
        query = scoped(
            select(Document.status, func.count(), func.coalesce(func.sum(Document.chunk_count), 0),
                   func.coalesce(func.sum(size), 0)).group_by(Document.status),
            access, Document,
        )
        by_status = {status: 0 for status in (DocumentStatus.INDEXING, DocumentStatus.READY,
                                                  DocumentStatus.FAILED, DocumentStatus.DELETING)}
        chunks = total_bytes = 0
        for status, count, status_chunks, status_bytes in (await self._session.execute(query)).all():
            by_status[status] = int(count)
            if status == DocumentStatus.READY:
                chunks += int(status_chunks)
            total_bytes += int(status_bytes)
        per_owner = {owner: (int(count), int(characters)) for owner, count, characters in (await self._session.execute(
            scoped(select(Document.owner, func.count(), func.coalesce(func.sum(Document.content_chars), 0))
                   .group_by(Document.owner), access, Document))).all()}
        await self._session.commit()
        usages = []
        for owner in access.readable_owners:
            documents, characters = per_owner.get(owner, (0, 0))
            usages.append(Usage(owner, documents, characters, *limits_of(owner, self._settings)))
        return IngestionTotals(by_status=by_status, chunks=chunks, bytes=total_bytes, usages=usages)

    async def get(self, caller: Access | str, document_id: str) -> Document:
        if "\x00" in document_id:  # never in an id; PostgreSQL would refuse the query (500)
            raise NotFound("document not found")
        query = (scoped(select(Document).where(Document.id == document_id), as_access(caller), Document)
                 .execution_options(populate_existing=True))  # claims are UPDATEs the session does not see
        document = (await self._session.scalars(query)).first()
        if document is None:
            raise NotFound("document not found")
        return document
