"""Taking documents in: /save-document, /documents/upload and /documents/batch.

Every request goes the same way:
1. its own checks (file count, batch items and bytes): a 413/422 here costs nothing;
2. the ingestion byte budget is charged the bytes of all its documents at once (text as
   UTF-8, files as sent; `ratelimit.py`): a request that does not fit is refused whole with
   429 + Retry-After and spends nothing; from here on its bytes are spent, whatever each
   document turns out to be (created, a duplicate, or refused: the server read and checked it);
3. files are read in the extraction sandbox (`sandbox.ExtractionPool`, worker processes,
   never the event loop), one after another, so one request never holds more than one worker;
4. `DocumentService.save` validates, deduplicates, checks the quotas and indexes.

Uploads of several files and batches answer per item, in input order (created / duplicate /
error with the error's code, message and status): a bad file or item (unreadable, over a
limit or the quota, failed to index) never fails the others, and what was stored is said.
An upload of one file answers with that file's error as the request's (as before). Errors
that are nobody's item (the database is down) fail the request as usual; documents stored
before it stay, and sending the request again deduplicates them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rag_service.config import Settings
from rag_service.documents.extraction import ExtractedFile
from rag_service.documents.records import (
    BatchItem,
    FileItem,
    InvalidItem,
    ItemOutcome,
    StoredDocument,
    TextItem,
    UploadedFile,
)
from rag_service.documents.sandbox import ExtractionPool
from rag_service.documents.service import DocumentService
from rag_service.documents.validation import validate_title
from rag_service.errors import AppError, PayloadTooLarge, Unprocessable
from rag_service.ratelimit import RateLimiter
from rag_service.storage.access import Access
from rag_service.storage.models import DEFAULT_COLLECTION

# The ingestion gate's code for "too many documents being indexed": after one item waited
# for a slot in vain, the rest of the batch is answered the same without waiting again.
BUSY = "busy"


def check_upload_count(count: int, title: str | None, max_files: int) -> None:
    if count == 0:
        raise Unprocessable("no file uploaded: send one or more files in the `files` field")
    if count > max_files:
        raise PayloadTooLarge(f"{count} files uploaded; the limit is {max_files} per request")
    if title is not None and count > 1:
        raise Unprocessable("`title` can only be given when uploading a single file")


def check_batch_count(count: int, settings: Settings) -> None:
    if count == 0:
        raise Unprocessable("the batch has no items")
    if count > settings.max_batch_items:
        raise PayloadTooLarge(f"the batch has {count} items; the limit is {settings.max_batch_items} "
                              "per request (MAX_BATCH_ITEMS)")


def utf8_size(text: str) -> int:
    """UTF-8 bytes of `text`; UnicodeEncodeError for unpaired surrogates (a 422 `invalid_text`)."""
    return len(text.encode("utf-8"))


class DocumentIntake:
    def __init__(self, documents: DocumentService, pool: ExtractionPool, limiter: RateLimiter,
                 settings: Settings) -> None:
        self._documents = documents
        self._pool = pool
        self._limiter = limiter
        self._settings = settings

    async def save(self, access: Access, title: str, content: str, metadata: dict[str, Any] | None = None,
                   collection_id: str = DEFAULT_COLLECTION) -> StoredDocument:
        await self._documents.collections.writable_owner(access, collection_id)  # 404/403 before spending
        await self._limiter.spend_ingest_bytes(access.user_id, utf8_size(content))
        document, created = await self._documents.save(access, title, content, metadata,
                                                       collection_id=collection_id)
        return StoredDocument(document, created)

    async def upload(self, access: Access, files: Sequence[UploadedFile], *, title: str | None = None,
                     metadata: dict[str, Any] | None = None,
                     collection_id: str = DEFAULT_COLLECTION) -> list[ItemOutcome]:
        """Read (sandboxed), check and store each file in turn: one outcome per file. A
        single file's error is raised (the request's answer); with several, each file's
        error is its own outcome."""
        check_upload_count(len(files), title, self._settings.max_files_per_upload)
        await self._documents.collections.writable_owner(access, collection_id)
        await self._limiter.spend_ingest_bytes(access.user_id, sum(file.size for file in files))
        outcomes = await self._store_each(access, collection_id,
                                          [FileItem(file, title, metadata) for file in files])
        if len(outcomes) == 1 and outcomes[0].error is not None:
            raise outcomes[0].error
        return outcomes

    async def batch(self, access: Access, items: Sequence[BatchItem],
                    collection_id: str = DEFAULT_COLLECTION) -> list[ItemOutcome]:
        """Store each item in turn; one item's 4xx/5xx is its own answer, not the request's
        (a collection the caller cannot add to refuses the whole request first)."""
        check_batch_count(len(items), self._settings)
        total = sum(item.size for item in items)
        if total > self._settings.max_batch_bytes:
            raise PayloadTooLarge(f"the batch carries {total} bytes of documents; the limit is "
                                  f"{self._settings.max_batch_bytes} per request (MAX_BATCH_BYTES)")
        await self._documents.collections.writable_owner(access, collection_id)
        await self._limiter.spend_ingest_bytes(access.user_id, total)
        return await self._store_each(access, collection_id, items)

    async def _store_each(self, access: Access, collection_id: str, items: Sequence[BatchItem]) -> list[ItemOutcome]:
        outcomes: list[ItemOutcome] = []
        busy: AppError | None = None
        for index, item in enumerate(items):
            if busy is not None:
                outcomes.append(ItemOutcome(index, error=busy))
                continue
            try:
                stored = await self._store_item(access, collection_id, item)
            except AppError as error:
                outcomes.append(ItemOutcome(index, error=error))
                if error.code == BUSY:
                    busy = error
            else:
                outcomes.append(ItemOutcome(index, stored=stored))
        return outcomes

    async def _store_item(self, access: Access, collection_id: str, item: BatchItem) -> StoredDocument:
        if isinstance(item, InvalidItem):
            raise item.error
        if isinstance(item, TextItem):
            document, created = await self._documents.save(access, item.title, item.content, item.metadata,
                                                           collection_id=collection_id)
            return StoredDocument(document, created)
        file, document_title = await self._read(item.file, item.title)
        return await self._store_extracted(access, collection_id, file, document_title, item.metadata)

    async def _read(self, upload: UploadedFile, title: str | None) -> tuple[ExtractedFile, str]:
        """The file's text (read in the sandbox) and its document title, or a 4xx."""
        settings = self._settings
        if upload.size > settings.max_upload_bytes:
            raise PayloadTooLarge(f"{upload.filename!r} is larger than the limit of {settings.max_upload_bytes} bytes")
        file = await self._pool.extract(upload.filename, upload.data)
        # The worker returns normalized, non-blank text: only the length is left to check
        # (without normalizing a large text again on the event loop).
        if len(file.content) > settings.max_document_chars:
            raise PayloadTooLarge(f"content is longer than the limit of {settings.max_document_chars} characters")
        return file, validate_title(title or file.title or file.source_name, settings)

    async def _store_extracted(self, access: Access, collection_id: str, file: ExtractedFile, title: str,
                               metadata: dict[str, Any] | None) -> StoredDocument:
        document, created = await self._documents.save(
            access, title, file.content, metadata or {}, source_name=file.source_name, mime_type=file.mime_type,
            collection_id=collection_id,
        )
        return StoredDocument(document, created)
