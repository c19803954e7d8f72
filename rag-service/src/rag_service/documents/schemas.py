"""Request and response bodies of the documents routes."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from rag_service.storage.models import Document


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The upper bound is Settings.max_embed_chars (checked by the service: 413).
    text: str = Field(min_length=1, description="Text to embed as a query")


class EmbedResponse(BaseModel):
    embedding: list[float]
    success: bool = True


class SaveDocumentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, description="Shown in listings and search results")
    content: str = Field(min_length=1, description="Plain text or Markdown")
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="JSON object; top-level scalars and lists of scalars can be used as search filters",
    )


class SaveDocumentResponse(BaseModel):
    document_id: str
    success: bool = True
    message: str


class UploadedDocument(BaseModel):
    document_id: str
    title: str
    created: bool
    message: str


class UploadResponse(BaseModel):
    documents: list[UploadedDocument]
    success: bool = True


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


class IngestionSummary(BaseModel):
    """GET /documents/summary: the caller's documents by status, what they hold, and the quotas."""

    documents: int
    by_status: dict[str, int] = Field(description="Counts for indexing, ready, failed and deleting")
    chunks: int = Field(description="Chunks of ready documents (their vectors in the store)")
    bytes: int = Field(description="UTF-8 size of all stored document text")
    characters: int = Field(description="Characters stored, as counted by QUOTA_MAX_CHARACTERS")
    max_documents: int = Field(description="QUOTA_MAX_DOCUMENTS (0 = unlimited); past it a save is 413 quota_exceeded")
    max_characters: int = Field(description="QUOTA_MAX_CHARACTERS (0 = unlimited)")

    @classmethod
    def of(cls, totals: Any) -> IngestionSummary:
        return cls(documents=totals.documents, by_status=totals.by_status, chunks=totals.chunks, bytes=totals.bytes,
                   characters=totals.usage.characters, max_documents=totals.usage.max_documents,
                   max_characters=totals.usage.max_characters)


class DeleteResponse(BaseModel):
    success: bool = True
    document_id: str


def save_message(document: Document, created: bool) -> str:
    if created:
        return f"document saved and indexed ({document.chunk_count} chunks)"
    if document.status == "indexing":
        return "document already exists and is being indexed"
    return "document already exists"
