"""The chat flow: save the question, retrieve the caller's chunks, stream a cited answer, save it.

    prepare(access, request)           validate -> ChatTurns.start_turn (question + an
                                       "incomplete" assistant placeholder committed) ->
                                       SearchService.search (scoped to `access`) -> numbered sources
    events(prepared)                   SourcesEvent, DeltaEvent..., then finish_turn, DoneEvent
    answer(access, request)            the same, collected into one ChatAnswer (the JSON route)

Failure and disconnect rules (the conversation is always consistent):
- bad input (422/404) is refused before anything is written;
- a provider failure (embedder during retrieval, or generator) leaves the question saved and
  the assistant message stored with status "failed" (content: any text produced before the
  failure, usually empty); the error propagates as ProviderUnavailable (503);
- a client that goes away mid-stream (generator closed or cancelled) leaves the assistant
  message with status "incomplete" holding the text streamed so far.

Sizes are bounded: an answer is cut at `max_answer_chars` (MAX_ANSWER_CHARS; the
generator is closed there and the cut answer is what is streamed and stored), every source
is a chunk of at most CHUNK_MAX_CHARS and a snippet of SNIPPET_MAX_CHARS.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import asdict, dataclass, field, replace

import anyio

from rag_service.chat.records import (
    ChatInput,
    ChatAnswer,
    ChatEvent,
    CitedSource,
    DeltaEvent,
    DoneEvent,
    Outcome,
    SourcesEvent,
    Timing,
)
from rag_service.chat.turns import STATUS_COMPLETE, STATUS_FAILED, STATUS_INCOMPLETE, ChatTurns, StartedTurn
from rag_service.errors import Unprocessable, check_in_range
from rag_service.providers.base import NOT_FOUND_ANSWER, Generator, Source, Turn
from rag_service.providers.citations import cited_numbers
from rag_service.search.filters import parse_filters
from rag_service.search.service import SearchService
from rag_service.storage.access import Access

log = logging.getLogger(__name__)

SNIPPET_MAX_CHARS = 240
# A follow-up this short (in words), or one that refers back ("its", "that"...), is
# retrieved together with the previous question: "what about its flags?" alone matches
# nothing useful.
FOLLOW_UP_MAX_WORDS = 5
REFERRING_WORDS = frozenset(
    "it its it's they them their theirs this that these those he him his she her there "
    "same above previous former latter one ones also else".split()
)
_WORD = re.compile(r"[\w']+")


# The chat's sources are the `top_k` best chunks, then up to this many more chunks of the
# same documents (the best of them for the question, from a search among those documents:
# SearchService.search): a page's best two chunks by retrieval score are not always the
# ones holding the answer ("What is the default pipe capacity?" finds pipe(7)'s chunks on
# /proc/sys/fs/pipe-max-size, not "65,536 bytes").
# Chosen offline on saved candidate lists of the dev questions of both copies of
# manpages-dev (3 and 5 gained as much or 1 less; the first chunk of the best pages, or more
# chunks of any page, less), then measured with bench/answer_quality.py: answers right
# 59 -> 61 of 74 (this machine's dev set), 64 -> 65 of 80 (shared copy), 28 -> 30 of 38
# (held-out), 30 of 39 both (held-out, shared copy); docs/performance.md has the figures.
# Taken from a search among the documents instead of the first search's 40 candidates:
# 65 -> 67 of 74 and 68 -> 70 of 80 right, 69 -> 71 of 74 cited; 3 or 5 were no better.
SAME_DOCUMENT_CHUNKS = 4


def is_follow_up(question: str) -> bool:
    words = [w.lower() for w in _WORD.findall(question)]
    return len(words) <= FOLLOW_UP_MAX_WORDS or any(w in REFERRING_WORDS for w in words)


def retrieval_text(question: str, history: list[Turn]) -> str:
    """What to search for: the question, preceded by the previous user question when the
    question is a follow-up. Keeps the retrieval deterministic and cheap (no LLM rewrite)."""
    previous = next((turn.content for turn in reversed(history) if turn.role == "user"), None)
    if previous and is_follow_up(question):
        return f"{previous.strip()}\n{question.strip()}"
    return question.strip()


def snippet(text: str) -> str:
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= SNIPPET_MAX_CHARS else flat[: SNIPPET_MAX_CHARS - 1].rstrip() + "…"


def answer_outcome(text: str, sources: list[CitedSource], generator: str) -> Outcome:
    """The outcome of answer `text` over `sources`: a not-found answer cites nothing, and
    only numbers of real sources count as cited."""
    if text.strip() == NOT_FOUND_ANSWER:
        return Outcome(answer_found=False, generator=generator, cited_sources=[])
    numbers = {source.number for source in sources}
    return Outcome(answer_found=True, generator=generator,
                   cited_sources=[n for n in cited_numbers(text) if n in numbers])


def marked_cited(sources: list[CitedSource], outcome: Outcome) -> list[CitedSource]:
    cited = set(outcome.cited_sources)
    return [replace(source, cited=source.number in cited) for source in sources]


@dataclass
class PreparedChat:
    """A turn whose question is saved and whose sources are retrieved, ready to generate."""

    access: Access
    query: str
    turn: StartedTurn
    history: list[Turn]
    sources: list[CitedSource]
    generator_sources: list[Source]
    started: float = field(default_factory=time.perf_counter)
    retrieved: float = field(default_factory=time.perf_counter)

    @property
    def context_used(self) -> list[str]:
        return [source.text for source in self.generator_sources]


class ChatService:
    def __init__(self, search: SearchService, generator: Generator, turns: ChatTurns, *,
                 max_query_chars: int, max_history_turns: int, max_answer_chars: int = 0) -> None:
        self._search = search
        # 0 = unlimited.
        self._max_answer_chars = max_answer_chars
        self._generator = generator
        self._turns = turns
        self._max_query_chars = max_query_chars
        self._max_history_turns = max_history_turns

    async def prepare(self, access: Access, request: ChatInput) -> PreparedChat:
        started = time.perf_counter()
        self._validate(request)
        filters = parse_filters(request.filters)
        turn = await self._turns.start_turn(access, request.query, request.conversation_id)
        if request.conversation_id is not None:
            history = turn.history
        else:
            history = list(request.history)
        try:
            result = await self._search.search(
                access, request.query, top_k=request.top_k, filters=filters, mode="hybrid",
                include_embedding=False, retrieval_text=retrieval_text(request.query, history),
                same_document_chunks=SAME_DOCUMENT_CHUNKS,
            )
        except BaseException as exc:
            status = STATUS_FAILED if isinstance(exc, Exception) else STATUS_INCOMPLETE
            await self._finish_quietly(access, turn, "", [], status)
            raise
        hits = [*result.hits, *result.same_document_hits]
        sources = [
            CitedSource(number=n, document_id=hit.document_id, title=hit.title, chunk_index=hit.chunk_index,
                        score=hit.score, snippet=snippet(hit.text))
            for n, hit in enumerate(hits, start=1)
        ]
        generator_sources = [Source(number=n, title=hit.title, text=hit.text) for n, hit in enumerate(hits, start=1)]
        return PreparedChat(access=access, query=request.query, turn=turn, history=history,
                            sources=sources, generator_sources=generator_sources, started=started,
                            retrieved=time.perf_counter())

    def _validate(self, request: ChatInput) -> None:
        limit = self._max_query_chars
        if len(request.query) > limit:
            raise Unprocessable(f"query is {len(request.query)} characters long; the limit is {limit} "
                                "(max_query_chars)", code="query_too_long")
        check_in_range("top_k", request.top_k, 1, self._search.settings.max_chat_top_k, "max_chat_top_k")
        max_turns = self._max_history_turns
        if len(request.history) > max_turns:
            raise Unprocessable(f"history_context has {len(request.history)} messages; the limit is "
                                f"{max_turns} (max_history_turns)", code="history_too_long")

    async def events(self, prepared: PreparedChat) -> AsyncIterator[ChatEvent]:
        """Sources, answer deltas, then done (after the answer is saved).

        Raises ProviderUnavailable when the generator fails (answer saved as "failed").
        Closed or cancelled early, it saves the partial answer as "incomplete".
        """
        pieces: list[str] = []
        first_delta_at: float | None = None
        room = self._max_answer_chars or None
        try:
            yield SourcesEvent(prepared.sources)
            stream = self._generator.stream(prepared.query, prepared.generator_sources, prepared.history)
            # Generators cite only the sources they were given (the model generators
            # filter their output with providers.citations.filter_citations).
            async with aclosing(stream):
                async for piece in stream:
                    if room is not None:
                        piece = piece[:room]
                        room -= len(piece)
                    if piece:
                        first_delta_at = first_delta_at or time.perf_counter()
                        pieces.append(piece)
                        yield DeltaEvent(piece)
                    if room == 0:
                        break  # the answer is as long as it may be: the generator is closed
        except BaseException as exc:
            # Exception: the provider (or a bug) failed. CancelledError / GeneratorExit:
            # the client went away; what it was shown so far is kept, marked incomplete.
            status = STATUS_FAILED if isinstance(exc, Exception) else STATUS_INCOMPLETE
            # What the client was shown.
            await self._finish_quietly(prepared.access, prepared.turn, "".join(pieces), prepared.sources, status)
            raise
        text = "".join(pieces)
        outcome = answer_outcome(text, prepared.sources, self._generator.name)
        # Shielded: a client leaving right after the last delta still gets a complete answer
        # saved (a failure to save propagates: no `done` without a saved answer).
        with anyio.CancelScope(shield=True):
            await self._turns.finish_turn(
                prepared.access, prepared.turn, content=text,
                sources=[asdict(source) for source in marked_cited(prepared.sources, outcome)],
                status=STATUS_COMPLETE, answer_found=outcome.answer_found, generator=outcome.generator,
            )

        def since_start(moment: float | None) -> float | None:
            return None if moment is None else round((moment - prepared.started) * 1000, 2)

        yield DoneEvent(
            conversation_id=prepared.turn.conversation_id,
            message_id=prepared.turn.assistant_message_id,
            timing=Timing(retrieval_ms=since_start(prepared.retrieved), first_delta_ms=since_start(first_delta_at),
                          total_ms=since_start(time.perf_counter())),
            outcome=outcome,
        )

    async def answer(self, access: Access, request: ChatInput) -> ChatAnswer:
        prepared = await self.prepare(access, request)
        return await self.collect(prepared)

    async def collect(self, prepared: PreparedChat) -> ChatAnswer:
        """Run `events` to the end and return the whole answer (the JSON route)."""
        pieces: list[str] = []
        done: DoneEvent | None = None
        async with aclosing(self.events(prepared)) as events:
            async for event in events:
                if isinstance(event, DeltaEvent):
                    pieces.append(event.text)
                elif isinstance(event, DoneEvent):
                    done = event
        if done is None:  # events() ends with DoneEvent or raises
            raise RuntimeError("the chat events ended without a done event")
        return ChatAnswer(
            text="".join(pieces),
            sources=marked_cited(prepared.sources, done.outcome),
            context_used=prepared.context_used,
            conversation_id=prepared.turn.conversation_id,
            message_id=prepared.turn.assistant_message_id,
            outcome=done.outcome,
        )

    async def _finish_quietly(self, access: Access, turn: StartedTurn, content: str,
                              sources: list[CitedSource], status: str) -> None:
        """Record how a turn ended without masking the error that ended it. Shielded: a
        cancelled request (client gone) must still get its row updated."""
        payload = [asdict(source) for source in sources]
        with anyio.CancelScope(shield=True):
            try:
                await self._turns.finish_turn(access, turn, content=content, sources=payload, status=status)
            except Exception:
                # The placeholder stays "incomplete": still a consistent conversation.
                log.exception("could not record the end of chat turn %s", turn.assistant_message_id)
