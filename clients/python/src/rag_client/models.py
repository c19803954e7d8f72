"""Typed results of the rag-service routes (plain dataclasses built from the JSON bodies)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SavedDocument:
    document_id: str
    created: bool
    message: str


@dataclass(frozen=True)
class UploadedDocument:
    document_id: str
    title: str
    created: bool
    message: str


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    source_name: str | None
    mime_type: str
    status: str
    error: str | None
    chunk_count: int
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    content: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Document:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DocumentPage:
    documents: list[Document]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class IngestionSummary:
    documents: int
    by_status: dict[str, int]
    chunks: int
    bytes: int
    # Usage against the quotas (0 = unlimited).
    characters: int
    max_documents: int
    max_characters: int


@dataclass(frozen=True)
class SearchHit:
    document_id: str
    title: str
    chunk_index: int
    text: str
    score: float
    metadata: dict[str, Any]
    start: int
    end: int


@dataclass(frozen=True)
class Source:
    number: int
    document_id: str
    title: str
    chunk_index: int
    score: float
    snippet: str


@dataclass(frozen=True)
class ChatAnswer:
    response: str
    sources: list[Source]
    context_used: list[str]
    conversation_id: str
    message_id: str


# --- streamed chat events (SSE) ---------------------------------------------------------

@dataclass(frozen=True)
class SourcesEvent:
    sources: list[Source]
    conversation_id: str
    message_id: str
    context_used: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeltaEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    conversation_id: str
    message_id: str
    timing: dict[str, Any]


ChatEvent = SourcesEvent | DeltaEvent | DoneEvent


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str | None
    scope: str
    start: str | None
    expires_at: str | None
    created_at: str | None
    last_used_at: str | None
    # Only in the answer to create_api_key: the key itself, shown once.
    key: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


def sources_from(items: list[dict[str, Any]]) -> list[Source]:
    return [Source(**{k: item[k] for k in Source.__dataclass_fields__}) for item in items]
