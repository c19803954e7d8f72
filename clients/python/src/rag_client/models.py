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
class BatchText:
    """A text document for `batch()`."""

    title: str
    content: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchFile:
    """A file for `batch()`: a path, or (name, bytes) / (name, bytes, MIME type); the title
    defaults to the file's own title or name."""

    file: Any
    title: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchItemResult:
    """One item of a batch answer: `result` is created, duplicate (`document_id` is the
    existing document) or error (`error_code`, `error_message`, `error_status`)."""

    index: int
    result: str
    message: str
    document_id: str | None = None
    title: str | None = None
    status: str | None = None
    chunk_count: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    error_status: int | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchItemResult:
        error = data.get("error") or {}
        return cls(index=data["index"], result=data["result"], message=data["message"],
                   document_id=data.get("document_id"), title=data.get("title"), status=data.get("status"),
                   chunk_count=data.get("chunk_count"), error_code=error.get("code"),
                   error_message=error.get("message"), error_status=error.get("status"))

    @property
    def ok(self) -> bool:
        return self.result != "error"


@dataclass(frozen=True)
class BatchResult:
    items: list[BatchItemResult]
    created: int
    duplicates: int
    errors: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BatchResult:
        return cls([BatchItemResult.from_json(item) for item in data["items"]], data["created"],
                   data["duplicates"], data["errors"])


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    source_name: str | None
    mime_type: str
    status: str
    chunk_count: int
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    # Why indexing failed (status "failed"); the service may leave it out otherwise.
    error: str | None = None
    # Only from get_document / move_document: listings leave the text out.
    content: str | None = None
    # "personal" (the caller's default collection) or a collection's id; the owning
    # organization, None when personal. None from a service without collections.
    collection_id: str | None = None
    organization_id: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Document:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class Collection:
    """A collection the caller can read: `id` is "personal" for its default one, else a UUID;
    `organization_id` None for a personal one; `role` the caller's (owner for its own)."""

    id: str
    name: str
    organization_id: str | None
    role: str
    can_write: bool
    is_default: bool
    document_count: int
    created_at: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Collection:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DocumentPage:
    documents: list[Document]
    total: int
    page: int
    pages: int


@dataclass(frozen=True)
class OwnerUsage:
    """What one owner's collections hold against that owner's quota (0 = unlimited)."""

    owner: str  # the user id, or `org:<organization id>`
    organization_id: str | None
    documents: int
    characters: int
    max_documents: int
    max_characters: int


@dataclass(frozen=True)
class IngestionSummary:
    documents: int
    by_status: dict[str, int]
    chunks: int
    bytes: int
    # The caller's own usage against its quotas (0 = unlimited).
    characters: int
    max_documents: int
    max_characters: int
    # Usage per owner the caller can read: itself first, then each organization in its token.
    owners: list[OwnerUsage] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IngestionSummary:
        return cls(data["documents"], data["by_status"], data["chunks"], data["bytes"], data["characters"],
                   data["max_documents"], data["max_characters"],
                   [OwnerUsage(**owner) for owner in data.get("owners", [])])


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
    # Whether the answer cites it; None in the streamed `sources` event (known at `done`).
    cited: bool | None = None


@dataclass(frozen=True)
class ChatAnswer:
    response: str
    sources: list[Source]
    context_used: list[str]
    conversation_id: str
    message_id: str
    # False: the documents do not answer the question (`response` is the not-found message).
    answer_found: bool = True
    # "extractive" (no model), "gemini:<model>", "openai:<model>".
    generator: str = ""
    # Numbers of the sources the answer cites.
    cited_sources: list[int] = field(default_factory=list)


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
    answer_found: bool = True
    generator: str = ""
    cited_sources: list[int] = field(default_factory=list)


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
    return [Source(**{k: item[k] for k in Source.__dataclass_fields__ if k in item}) for item in items]
