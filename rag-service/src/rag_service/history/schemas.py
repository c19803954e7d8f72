"""Wire shapes of the history routes (seed contract: `history`, `total`, `page`, `pages`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field, field_serializer

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


class HistoryPage(BaseModel):
    history: list[ConversationSummary]
    total: int
    page: int
    pages: int


class StoredMessage(_Timestamped):
    id: str
    role: Literal["user", "assistant"]
    content: str
    # Assistant messages: [{number, document_id, title, chunk_index, score, snippet}]
    sources: list[dict[str, Any]] = Field(default_factory=list)
    status: MessageStatus
    created_at: datetime


class ConversationDetail(_Timestamped):
    conversation_id: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[StoredMessage]


class DeletedConversation(BaseModel):
    success: Literal[True] = True
    conversation_id: str
