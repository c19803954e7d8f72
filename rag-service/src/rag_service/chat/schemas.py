"""Wire shapes of `POST /chat` (seed contract `{response, sources, context_used}` plus ids),
built from the chat service's results."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from rag_service.chat.records import DEFAULT_CHAT_TOP_K, ChatAnswer, ChatInput, CitedSource, DoneEvent, Timing
from rag_service.providers.base import Turn
from rag_service.search.filters import SearchFilters

# One client-supplied history message; answers can be long, but not unbounded.
MAX_HISTORY_MESSAGE_CHARS = 8_000
# Hard cap on the list before the settings-based limit (max_history_turns) is checked,
# so an absurd body is refused by validation without being walked.
HISTORY_CONTEXT_HARD_CAP = 200


class HistoryMessage(BaseModel):
    """A client-provided earlier turn (seed `history_context` item)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    content: Annotated[StrictStr, Field(max_length=MAX_HISTORY_MESSAGE_CHARS)]


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The length limit (settings.max_query_chars) is checked by the service, which knows it.
    query: StrictStr = Field(min_length=1)
    # Continue one of the caller's stored conversations; omitted -> a new conversation.
    conversation_id: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    # Earlier turns supplied by the client; used only when no conversation_id is given
    # (a stored conversation's own messages win). At most settings.max_history_turns items.
    history_context: Annotated[list[HistoryMessage], Field(max_length=HISTORY_CONTEXT_HARD_CAP)] | None = None
    # From 1 to settings.max_chat_top_k, checked by the service (as the query's length): the
    # best chunks retrieved; up to SAME_DOCUMENT_CHUNKS (4) more chunks of their documents follow.
    top_k: int = DEFAULT_CHAT_TOP_K
    filters: SearchFilters | None = None
    # true -> Server-Sent Events; false -> JSON; omitted -> decided by `Accept: text/event-stream`.
    stream: bool | None = None

    def as_input(self) -> ChatInput:
        return ChatInput(query=self.query, conversation_id=self.conversation_id, top_k=self.top_k, filters=self.filters,
                         history=tuple(Turn(role=m.role, content=m.content) for m in self.history_context or ()))

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("query must not be blank")
        if "\x00" in query:  # the question is stored; PostgreSQL refuses NUL in text
            raise ValueError("query must not contain NUL characters")
        return query


class AnswerOutcome(BaseModel):
    """What the answer says, machine-readably (in the JSON answer and the `done` event)."""

    # False: the documents do not answer the question; `response` is the fixed not-found
    # message and `cited_sources` is empty (the retrieved `sources` are still listed).
    answer_found: bool
    # Which generator answered: "extractive" (the default, no model), "gemini:<model>",
    # "openai:<model>".
    generator: str
    # Numbers of the sources the answer cites (`[n]` markers), in order of first citation.
    cited_sources: list[int]


class ChatResponse(AnswerOutcome):
    response: str
    # Source `number` is cited as `[number]` in the answer; `sources[i].number == i + 1`;
    # `cited` says whether the answer cites it. The first `top_k` are the best chunks found;
    # the rest (up to 4) are more chunks of the same documents, best first.
    sources: list[CitedSource]
    # The chunk texts given to the generator, in source order (seed contract: List[str]).
    context_used: list[str]
    conversation_id: str
    message_id: str

    @classmethod
    def of(cls, answer: ChatAnswer) -> ChatResponse:
        return cls(response=answer.text, sources=answer.sources,
                   context_used=answer.context_used, conversation_id=answer.conversation_id,
                   message_id=answer.message_id, **asdict(answer.outcome))


class ChatDone(AnswerOutcome):
    """Payload of the SSE `done` event."""

    conversation_id: str
    message_id: str
    status: Literal["complete"] = "complete"
    timing: Timing

    @classmethod
    def of(cls, done: DoneEvent) -> ChatDone:
        return cls(conversation_id=done.conversation_id, message_id=done.message_id, timing=done.timing,
                   **asdict(done.outcome))


class StreamErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ChatError(BaseModel):
    """Payload of the SSE `error` event: the JSON errors' envelope, and the turn it ended."""

    error: StreamErrorBody
    conversation_id: str | None = None
    message_id: str | None = None
