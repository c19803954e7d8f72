"""Uploads: read every file in the extraction sandbox, check it, then store them all.

Every file is read and checked before any is stored, so a bad file in a batch changes
nothing. Reading happens in the sandboxed process pool (`sandbox.ExtractionPool`), never
on the event loop; storing goes through `DocumentService.save` (dedup, ingestion).
Files are read one after another: one request never occupies more than one worker, so a
batch of hostile files cannot take every worker from other users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag_service.config import Settings
from rag_service.documents.extraction import ExtractedFile
from rag_service.documents.sandbox import ExtractionPool
from rag_service.documents.service import DocumentService
from rag_service.documents.validation import validate_title
from rag_service.errors import PayloadTooLarge, Unprocessable
from rag_service.storage.models import Document


@dataclass(frozen=True)
class UploadedFile:
    """One file as received: the client's file name (untrusted) and its bytes."""

    filename: str | None
    data: bytes


@dataclass(frozen=True)
class StoredUpload:
    document: Document
    created: bool


def check_upload_count(count: int, title: str | None, max_files: int) -> None:
    if count == 0:
        raise Unprocessable("no file uploaded: send one or more files in the `files` field")
    if count > max_files:
        raise PayloadTooLarge(f"{count} files uploaded; the limit is {max_files} per request")
    if title is not None and count > 1:
        raise Unprocessable("`title` can only be given when uploading a single file")


async def store_uploads(
    service: DocumentService,
    pool: ExtractionPool,
    user_id: str,
    files: list[UploadedFile],
    settings: Settings,
    *,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[StoredUpload]:
    """Extract (sandboxed), validate, then save every file; any 4xx stores nothing."""
    check_upload_count(len(files), title, settings.max_files_per_upload)
    extracted: list[tuple[ExtractedFile, str]] = []
    for upload in files:
        if len(upload.data) > settings.max_upload_bytes:
            raise PayloadTooLarge(f"{upload.filename!r} is larger than the limit of {settings.max_upload_bytes} bytes")
        file = await pool.extract(upload.filename, upload.data)
        # The worker returns normalized, non-blank text: only the length is left to check
        # (without normalizing a large text again on the event loop).
        if len(file.content) > settings.max_document_chars:
            raise PayloadTooLarge(f"content is longer than the limit of {settings.max_document_chars} characters")
        extracted.append((file, validate_title(title or file.title or file.source_name, settings)))

    stored = []
    for file, document_title in extracted:
        document, created = await service.save(
            user_id, document_title, file.content, metadata or {},
            source_name=file.source_name, mime_type=file.mime_type,
        )
        stored.append(StoredUpload(document, created))
    return stored
