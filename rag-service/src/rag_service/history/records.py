"""What the history service answers with: conversation listings and transcripts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rag_service.paging import Page


@dataclass(frozen=True)
class ConversationOverview:
    """One conversation in a listing."""

    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    message_count: int
    last_message_preview: str


@dataclass(frozen=True)
class ConversationPage(Page):
    conversations: list[ConversationOverview]


@dataclass(frozen=True)
class TranscriptMessage:
    id: str
    role: str
    content: str
    # Assistant messages: [{number, document_id, title, chunk_index, score, snippet, cited}]
    # (`cited`: whether the answer cites it; absent on answers saved before it existed)
    sources: list[dict[str, Any]]
    # "complete" | "incomplete" | "failed" (see chat/turns.py)
    status: str
    created_at: datetime
    # Complete answers: what the chat response said (None on user messages, unfinished
    # answers and answers saved before it was kept).
    answer_found: bool | None = None
    generator: str | None = None


@dataclass(frozen=True)
class Transcript:
    """A conversation and all its messages, oldest first."""

    id: str
    title: str
    created_at: datetime
    updated_at: datetime
    messages: list[TranscriptMessage]
