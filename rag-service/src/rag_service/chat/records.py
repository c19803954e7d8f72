"""The records of a chat turn that travel as they are: each cited source is stored with the
answer (history returns it unchanged) and sent to the client, and the timing ends the
stream. The service builds them; chat/schemas.py uses them in the wire shapes, so the
stored, streamed and JSON forms of a source are one definition. Also what the service
answers with: the stream's events and the whole answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from rag_service.providers.base import Turn
from rag_service.search.filters import SearchFilters


# Chunks retrieved for an answer when the request does not say (POST /chat, the
# OpenAI-compatible API, MCP `ask`); chat.service.SAME_DOCUMENT_CHUNKS more of their documents follow.
DEFAULT_CHAT_TOP_K = 5


@dataclass(frozen=True)
class ChatInput:
    """A question for the chat service, whichever protocol asked it (POST /chat, the
    OpenAI-compatible API, the MCP `ask` tool). Its limits are checked by the service."""

    query: str
    # Continue one of the caller's stored conversations; None -> a new conversation.
    conversation_id: str | None = None
    # Earlier turns supplied by the client; used only without a conversation_id.
    history: tuple[Turn, ...] = ()
    top_k: int = DEFAULT_CHAT_TOP_K
    filters: SearchFilters | None = None


@dataclass(frozen=True)
class CitedSource:
    """A retrieved chunk as the answer cites it: `[number]`, numbered from 1 in rank order."""

    number: int
    document_id: str
    title: str
    chunk_index: int
    score: float
    snippet: str
    # Whether the answer cites it (`[number]` in the text): known once the answer is done,
    # so None in the `sources` event, a bool in the JSON answer and in stored history.
    cited: bool | None = None


@dataclass(frozen=True)
class Timing:
    """Milliseconds from the request reaching the chat service."""

    # Question saved and sources retrieved (query embedding + hybrid search).
    retrieval_ms: float
    # None when no text was produced.
    first_delta_ms: float | None
    total_ms: float


@dataclass(frozen=True)
class Outcome:
    """What a finished answer says, machine-readably."""

    # False when the generator answered NOT_FOUND_ANSWER (the sources do not say).
    answer_found: bool
    # The generator's name: "extractive", "gemini:<model>", "openai:<model>".
    generator: str
    # Source numbers the answer cites, in order of first citation (none when not found).
    cited_sources: list[int]


@dataclass(frozen=True)
class SourcesEvent:
    sources: list[CitedSource]


@dataclass(frozen=True)
class DeltaEvent:
    text: str


@dataclass(frozen=True)
class DoneEvent:
    """The answer is complete and saved."""

    conversation_id: str
    message_id: str
    timing: Timing
    outcome: Outcome


ChatEvent = SourcesEvent | DeltaEvent | DoneEvent


@dataclass(frozen=True)
class ChatAnswer:
    """A whole answer (the JSON route), saved as the conversation's latest turn."""

    text: str
    # Every retrieved source, each marked `cited` or not.
    sources: list[CitedSource]
    # The chunk texts given to the generator, in source order.
    context_used: list[str]
    conversation_id: str
    message_id: str
    outcome: Outcome
