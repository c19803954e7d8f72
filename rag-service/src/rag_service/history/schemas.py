"""Wire shapes of the history routes (seed contract: `history`, `total`, `page`, `pages`),
built from the history service's results."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer

from rag_service.history.records import ConversationOverview, ConversationPage, Transcript, TranscriptMessage

# An assistant message's lifecycle:
# - "incomplete": saved before generation starts; stays so if the client went away mid-stream
#   (holding whatever text had been streamed) or the process died while answering;
# - "complete": the whole answer was generated and saved;
# - "failed": the answer provider failed (the user's question is kept; content is what was
#   generated before the failure, usually empty).
MessageStatus = Literal["complete", "incomplete", "failed"]


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored in UTC); Postgres aware ones."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


class _Timestamped(BaseModel):
    @field_serializer("created_at", "updated_at", check_fields=False)
    def _utc(self, moment: datetime) -> str:
        return as_utc(moment).isoformat()


class ConversationSummary(_Timestamped):
    conversation_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    last_message_preview: str

    @classmethod
    def of(cls, overview: ConversationOverview) -> ConversationSummary:
        return cls(conversation_id=overview.id, title=overview.title, created_at=overview.created_at,
                   updated_at=overview.updated_at, message_count=overview.message_count,
                   last_message_preview=overview.last_message_preview)


class HistoryPage(BaseModel):
    history: list[ConversationSummary]
    total: int
    page: int
    pages: int

    @classmethod
    def of(cls, page: ConversationPage) -> HistoryPage:
        return cls(history=[ConversationSummary.of(c) for c in page.conversations], total=page.total,
                   page=page.page, pages=page.pages)


class StoredMessage(_Timestamped):
    id: str
    role: Literal["user", "assistant"]
    content: str
    # Assistant messages: [{number, document_id, title, chunk_index, score, snippet, cited}]
    # (`cited`: whether the answer cites it; absent on answers saved before it existed)
    sources: list[dict[str, Any]] = Field(default_factory=list)
    status: MessageStatus
    created_at: datetime
    # Complete assistant answers: the chat response's `answer_found` and `generator`; null on
    # user messages, answers that did not complete and answers saved before they were kept.
    answer_found: bool | None = None
    generator: str | None = None

    @classmethod
    def of(cls, message: TranscriptMessage) -> StoredMessage:
        return cls(id=message.id, role=message.role, content=message.content, sources=message.sources,
                   status=message.status, created_at=message.created_at,
                   answer_found=message.answer_found, generator=message.generator)


class ConversationDetail(_Timestamped):
    conversation_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[StoredMessage]

    @classmethod
    def of(cls, transcript: Transcript) -> ConversationDetail:
        return cls(conversation_id=transcript.id, title=transcript.title, created_at=transcript.created_at,
                   updated_at=transcript.updated_at, messages=[StoredMessage.of(m) for m in transcript.messages])


class DeletedConversation(BaseModel):
    success: Literal[True] = True
    conversation_id: str
