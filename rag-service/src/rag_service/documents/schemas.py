"""Request and response bodies of the documents routes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from rag_service.collections.records import MAX_COLLECTION_ID_CHARS
from rag_service.documents.records import ItemOutcome
from rag_service.storage.access import org_of
from rag_service.storage.models import DEFAULT_COLLECTION, Document

COLLECTION_FIELD = (f"The collection to save into: `{DEFAULT_COLLECTION}` (the caller's default collection) or the "
                    "id of a collection the caller may write (GET /collections)")


class SaveDocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, description="Shown in listings and search results")
    content: str = Field(min_length=1, description="Plain text or Markdown")
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="JSON object; top-level scalars and lists of scalars can be used as search filters",
    )
    collection_id: str = Field(default=DEFAULT_COLLECTION, min_length=1, max_length=MAX_COLLECTION_ID_CHARS,
                               description=COLLECTION_FIELD)


class MoveDocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    collection_id: str = Field(min_length=1, max_length=MAX_COLLECTION_ID_CHARS,
                               description="The collection to move the document into")


class SaveDocumentResponse(BaseModel):
    document_id: str
    success: bool = True
    message: str


class UploadedDocument(BaseModel):
    document_id: str
    title: str
    created: bool
    message: str


class BatchTextItem(BaseModel):
    """A text document in a batch (the title, content and metadata rules of /save-document)."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(description="Shown in listings and search results")
    content: str = Field(description="Plain text or Markdown")
    metadata: dict[str, Any] | None = Field(default=None, description="As in /save-document")


class BatchFileItem(BaseModel):
    """A file in a multipart batch: which `files` part, and optionally its title and metadata."""

    model_config = ConfigDict(extra="forbid")

    file: int = Field(ge=0, description="Index of the file among the request's `files` parts, from 0")
    title: str | None = Field(default=None, description="Default: the file's own title, else its name")
    metadata: dict[str, Any] | None = Field(default=None, description="As in /save-document")


class BatchItemError(BaseModel):
    code: str = Field(description="The service's error code, e.g. unsupported_media_type, payload_too_large")
    message: str
    status: int = Field(description="The HTTP status a single-document request would have had")


class BatchItemResult(BaseModel):
    index: int = Field(description="Position of the item in the request, from 0")
    result: Literal["created", "duplicate", "error"]
    document_id: str | None = Field(default=None, description="The new document, or the existing one of a duplicate")
    title: str | None = None
    status: str | None = Field(default=None, description="The document's status: indexing, ready or failed")
    chunk_count: int | None = None
    message: str
    error: BatchItemError | None = Field(default=None, description="Only when result is error")


class BatchResponse(BaseModel):
    items: list[BatchItemResult] = Field(description="One per item, in the order of the request")
    created: int
    duplicates: int
    errors: int

    @classmethod
    def of(cls, outcomes: list[ItemOutcome]) -> BatchResponse:
        items = [_item_result(outcome) for outcome in outcomes]
        count = {kind: sum(item.result == kind for item in items) for kind in ("created", "duplicate", "error")}
        return cls(items=items, created=count["created"], duplicates=count["duplicate"], errors=count["error"])


class UploadResponse(BaseModel):
    documents: list[UploadedDocument] = Field(description="The files stored (created or duplicate), in order")
    items: list[BatchItemResult] = Field(description="One result per file, in the order sent (as /documents/batch)")
    created: int
    duplicates: int
    errors: int
    success: bool = Field(description="True when no file was refused")

    @classmethod
    def of(cls, outcomes: list[ItemOutcome]) -> UploadResponse:
        batch = BatchResponse.of(outcomes)
        stored = [outcome.stored for outcome in outcomes if outcome.stored is not None]
        return cls(
            documents=[UploadedDocument(document_id=item.document.id, title=item.document.title, created=item.created,
                                        message=save_message(item.document, item.created)) for item in stored],
            items=batch.items, created=batch.created, duplicates=batch.duplicates, errors=batch.errors,
            success=batch.errors == 0,
        )


def _item_result(outcome: ItemOutcome) -> BatchItemResult:
    if outcome.error is not None:
        error = outcome.error
        return BatchItemResult(index=outcome.index, result="error", message=error.message,
                               error=BatchItemError(code=error.code, message=error.message, status=error.status_code))
    assert outcome.stored is not None
    document, created = outcome.stored.document, outcome.stored.created
    return BatchItemResult(index=outcome.index, result="created" if created else "duplicate", document_id=document.id,
                           title=document.title, status=document.status, chunk_count=document.chunk_count,
                           message=save_message(document, created))


class DocumentSummary(BaseModel):
    id: str
    title: str
    source_name: str | None
    mime_type: str
    status: str
    # Why indexing failed (status "failed"); null otherwise.
    error: str | None = None
    chunk_count: int
    metadata: dict[str, Any]
    collection_id: str = Field(description=f"`{DEFAULT_COLLECTION}` or a collection's id")
    organization_id: str | None = Field(description="The organization owning the collection; null: personal")
    created_at: datetime
    updated_at: datetime

    @field_serializer("created_at", "updated_at")
    def _as_utc(self, moment: datetime) -> str:
        # SQLite hands back naive datetimes (stored in UTC); RFC 3339 needs the offset.
        aware = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
        return aware.isoformat()

    @classmethod
    def of(cls, document: Document) -> DocumentSummary:
        return cls(
            id=document.id, title=document.title, source_name=document.source_name,
            mime_type=document.mime_type, status=document.status, error=document.error,
            chunk_count=document.chunk_count, metadata=document.metadata_ or {},
            collection_id=document.collection_id, organization_id=org_of(document.owner),
            created_at=document.created_at, updated_at=document.updated_at,
        )


class DocumentDetail(DocumentSummary):
    content: str

    @classmethod
    def of(cls, document: Document) -> DocumentDetail:
        return cls(**DocumentSummary.of(document).model_dump(), content=document.content)


class DocumentList(BaseModel):
    documents: list[DocumentSummary]
    total: int
    page: int
    pages: int


class OwnerUsage(BaseModel):
    """What the collections of one owner hold against that owner's quota."""

    owner: str = Field(description="The owner key: your user id, or `org:<organization id>`")
    organization_id: str | None = Field(description="The organization, for an organization's collections")
    documents: int
    characters: int
    max_documents: int = Field(description="QUOTA_MAX_DOCUMENTS, or QUOTA_ORG_MAX_DOCUMENTS for an organization "
                                           "(0 = unlimited); past it a save or move is 413 quota_exceeded")
    max_characters: int = Field(description="QUOTA_MAX_CHARACTERS / QUOTA_ORG_MAX_CHARACTERS (0 = unlimited)")

    @classmethod
    def of(cls, usage: Any) -> OwnerUsage:
        return cls(owner=usage.owner, organization_id=org_of(usage.owner), documents=usage.documents,
                   characters=usage.characters, max_documents=usage.max_documents,
                   max_characters=usage.max_characters)


class IngestionSummary(BaseModel):
    """GET /documents/summary: the documents the caller may read by status, what they hold,
    the caller's own quota (top level) and the quota of every owner it may read (`owners`)."""

    documents: int
    by_status: dict[str, int] = Field(description="Counts for indexing, ready, failed and deleting")
    chunks: int = Field(description="Chunks of ready documents (their vectors in the store)")
    bytes: int = Field(description="UTF-8 size of all stored document text")
    characters: int = Field(description="Characters in your personal collections, as counted by QUOTA_MAX_CHARACTERS")
    max_documents: int = Field(description="QUOTA_MAX_DOCUMENTS (0 = unlimited); past it a save is 413 quota_exceeded")
    max_characters: int = Field(description="QUOTA_MAX_CHARACTERS (0 = unlimited)")
    owners: list[OwnerUsage] = Field(description="Usage per owner you can read: you first, then each organization "
                                                 "in your token; a document counts against its collection's owner")

    @classmethod
    def of(cls, totals: Any) -> IngestionSummary:
        return cls(documents=totals.documents, by_status=totals.by_status, chunks=totals.chunks, bytes=totals.bytes,
                   characters=totals.usage.characters, max_documents=totals.usage.max_documents,
                   max_characters=totals.usage.max_characters,
                   owners=[OwnerUsage.of(usage) for usage in totals.usages])


class DeleteResponse(BaseModel):
    success: bool = True
    document_id: str


def save_message(document: Document, created: bool) -> str:
    if created:
        return f"document saved and indexed ({document.chunk_count} chunks)"
    if document.status == "indexing":
        return "document already exists and is being indexed"
    return "document already exists"
