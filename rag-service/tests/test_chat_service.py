"""ChatService with real parts, once on SQLite and once on Postgres: Qdrant Edge, the MiniLM
embedder, BM25, the extractive generator; Gemini mocked at the HTTP layer for failures."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import respx
from sqlalchemy import func, select

from chat_support import BOB_BREAD, BREAD, QUAXLE, VOLCANO, ZFROB, chat_service, cited, ingest
from rag_service.chat.service import is_follow_up, retrieval_text
from rag_service.chat.records import ChatInput, DeltaEvent, DoneEvent, SourcesEvent
from rag_service.errors import NotFound, Unprocessable
from rag_service.history.service import HistoryService
from rag_service.core.retry import RetryPolicy
from rag_service.providers.base import Turn
from rag_service.errors import ProviderUnavailable
from rag_service.storage.access import Access, unscoped
from rag_service.storage.models import Conversation, Message

GEMINI_URL = r"^https://generativelanguage\.googleapis\.com/.*"
NO_RETRY = RetryPolicy(max_retries=0)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def rt(db_app: Any) -> Any:
    return db_app.state.runtime


def history_of(rt: Any) -> HistoryService:
    return HistoryService(rt.sessionmaker)


async def row_counts(rt: Any, user: str) -> tuple[int, int]:
    async with rt.sessionmaker() as session:
        # The tables themselves, past every scope: what was (not) written for `user`.
        conversations = await session.scalar(unscoped(
            select(func.count(Conversation.id)).where(Conversation.user_id == user), "test inspection"))
        messages = await session.scalar(unscoped(
            select(func.count(Message.id)).where(Message.user_id == user), "test inspection"))
    return conversations, messages


async def test_answer_cites_only_the_callers_own_chunks(rt: Any) -> None:
    alice, bob = new_user(), new_user()
    bread_id = await ingest(rt, alice, "Baking notes", BREAD)
    volcano_id = await ingest(rt, alice, "Volcanoes", VOLCANO)
    await ingest(rt, bob, "Bob's bread", BOB_BREAD)

    answer = await chat_service(rt).answer(Access(alice), ChatInput(query="Why does bread rise?"))

    assert answer.sources, "the bread document should be retrieved"
    assert [s.number for s in answer.sources] == list(range(1, len(answer.sources) + 1))
    assert answer.sources[0].document_id == bread_id
    assert {s.document_id for s in answer.sources} <= {bread_id, volcano_id}
    numbers = cited(answer.text)
    assert numbers, answer.text
    assert numbers <= set(range(1, len(answer.sources) + 1))
    assert all(answer.sources[n - 1].document_id == bread_id for n in numbers)
    assert answer.context_used[0] in BREAD
    assert "Bob" not in answer.text and all("Bob" not in text for text in answer.context_used)

    stored = await history_of(rt).get_conversation(Access(alice), answer.conversation_id)
    assert [(m.role, m.status) for m in stored.messages] == [("user", "complete"), ("assistant", "complete")]
    assert stored.messages[0].content == "Why does bread rise?"
    assert stored.messages[1].id == answer.message_id
    assert stored.messages[1].content == answer.text
    assert [s["document_id"] for s in stored.messages[1].sources] == [s.document_id for s in answer.sources]


async def test_without_relevant_documents_it_says_so_and_cites_nothing(rt: Any) -> None:
    user = new_user()  # owns no documents at all

    answer = await chat_service(rt).answer(Access(user), ChatInput(query="What is the boiling point of mercury?"))

    assert answer.sources == [] and answer.context_used == []
    assert answer.text.strip()
    assert cited(answer.text) == set()
    stored = await history_of(rt).get_conversation(Access(user), answer.conversation_id)
    assert stored.messages[1].status == "complete"


async def test_follow_up_retrieves_the_document_the_conversation_is_about(rt: Any) -> None:
    user = new_user()
    zfrob_id = await ingest(rt, user, "zfrob(1)", ZFROB)
    quaxle_id = await ingest(rt, user, "quaxle(8)", QUAXLE)
    await ingest(rt, user, "Volcanoes", VOLCANO)
    service = chat_service(rt)

    first = await service.answer(Access(user), ChatInput(query="What does the zfrob utility do?", top_k=1))
    follow_up = await service.answer(
        Access(user), ChatInput(query="what about its flags?", conversation_id=first.conversation_id, top_k=1))
    # Control: the same words with no conversation find the other tool's flags.
    alone = await service.answer(Access(user), ChatInput(query="what about its flags?", top_k=1))

    assert first.sources[0].document_id == zfrob_id
    assert follow_up.sources[0].document_id == zfrob_id
    assert follow_up.conversation_id == first.conversation_id
    assert alone.sources[0].document_id == quaxle_id
    stored = await history_of(rt).get_conversation(Access(user), first.conversation_id)
    assert [m.content for m in stored.messages if m.role == "user"] == [
        "What does the zfrob utility do?", "what about its flags?"]


async def test_client_history_context_informs_retrieval_without_a_conversation(rt: Any) -> None:
    user = new_user()
    zfrob_id = await ingest(rt, user, "zfrob(1)", ZFROB)
    await ingest(rt, user, "quaxle(8)", QUAXLE)

    answer = await chat_service(rt).answer(Access(user), ChatInput(
        query="what about its flags?", top_k=1,
        history=(Turn(role="user", content="What does the zfrob utility do?"),
                 Turn(role="assistant", content="It compresses archives."))))

    assert answer.sources[0].document_id == zfrob_id


# A page whose opening talks most about the question's words, while the sentence that
# answers it sits in a later chunk: the shape of pipe(7) and "What is the default pipe capacity?".
PIPES = "\n\n".join([
    "Pipe capacity. A pipe has a limited capacity. If the pipe is full, then a write blocks or fails, "
    "depending on whether the O_NONBLOCK flag is set. Different implementations have different limits "
    "for the pipe capacity. Applications should not rely on a particular capacity: an application should "
    "be designed so that a reading process consumes data as soon as it is available, so that a writing "
    "process does not remain blocked. The capacity of a pipe is a property of the pipe, not of its ends.",
    "PIPE_BUF. POSIX.1 says that writes of less than PIPE_BUF bytes must be atomic: the output data is "
    "written to the pipe as a contiguous sequence. Writes of more than PIPE_BUF bytes may be nonatomic: the "
    "kernel may interleave the data with data written by other processes. On Linux, PIPE_BUF is 4096 bytes. "
    "The precise semantics depend on whether the file descriptor is nonblocking and whether there are "
    "multiple writers to the pipe.",
    "Open file status flags. The only open file status flags that can be meaningfully applied to a pipe or "
    "FIFO are O_NONBLOCK and O_ASYNC. Setting the O_ASYNC flag for the read end of a pipe causes a signal "
    "to be generated when new input becomes available on the pipe. On Linux, O_ASYNC is supported for pipes "
    "and FIFOs only since kernel 2.6.",
    "Portability notes. On some other systems, pipes are bidirectional: data can be transmitted in both "
    "directions between the pipe ends. POSIX.1 requires only unidirectional pipes. Portable applications "
    "should avoid reliance on bidirectional pipe semantics. Write to a pipe whose read end is closed and "
    "SIGPIPE is delivered to the writing process.",
    "History. In Linux versions before 2.6.11, the capacity of a pipe was the same as the system page "
    "size, 4096 bytes on i386. Since Linux 2.6.11, the pipe capacity is 16 pages, that is 65,536 bytes on "
    "a system with a page size of 4096 bytes.",
])


async def test_the_answer_can_come_from_another_chunk_of_a_retrieved_document(rt: Any) -> None:
    user = new_user()
    pipes_id = await ingest(rt, user, "pipe(7)", PIPES)
    volcano_id = await ingest(rt, user, "Volcanoes", VOLCANO)

    answer = await chat_service(rt).answer(Access(user), ChatInput(query="What is the default pipe capacity?",
                                                                     top_k=1))

    first, *more = answer.sources
    assert first.document_id == pipes_id and "65,536" not in answer.context_used[0]
    # The chunks after the top k are more of the documents found, never another document.
    assert more and {s.document_id for s in more} == {pipes_id} and volcano_id not in {
        s.document_id for s in answer.sources}
    assert len({s.chunk_index for s in answer.sources}) == len(answer.sources)
    assert len(answer.context_used) == len(answer.sources)
    assert "65,536 bytes" in answer.text, answer.text
    holding = [s.number for s, text in zip(answer.sources, answer.context_used) if "65,536 bytes" in text]
    assert set(holding) & cited(answer.text), (holding, answer.text)


def test_follow_up_detection() -> None:
    assert is_follow_up("what about its flags?")
    assert is_follow_up("and the options?")
    assert not is_follow_up("How do volcanoes form from magma in the mantle?")
    history = [Turn("user", "What does zfrob do?"), Turn("assistant", "It compresses.")]
    assert retrieval_text("what about its flags?", history) == "What does zfrob do?\nwhat about its flags?"
    assert retrieval_text("How do volcanoes form from magma in the mantle?", history) == (
        "How do volcanoes form from magma in the mantle?")
    assert retrieval_text("its flags?", []) == "its flags?"


async def test_events_come_in_order_and_the_answer_is_saved_before_done(rt: Any) -> None:
    user = new_user()
    await ingest(rt, user, "Baking notes", BREAD)
    service = chat_service(rt)
    prepared = await service.prepare(Access(user), ChatInput(query="Why does bread rise?"))

    events = [event async for event in service.events(prepared)]

    assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], DoneEvent)
    deltas = [e.text for e in events[1:-1]]
    assert deltas and all(isinstance(e, DeltaEvent) for e in events[1:-1])
    done = events[-1]
    assert done.message_id == prepared.turn.assistant_message_id
    assert done.timing.first_delta_ms is not None and done.timing.total_ms >= done.timing.first_delta_ms
    stored = await history_of(rt).get_conversation(Access(user), done.conversation_id)
    assert stored.messages[1].content == "".join(deltas)
    assert stored.messages[1].status == "complete"


async def test_closing_the_stream_after_the_first_delta_keeps_a_consistent_conversation(rt: Any) -> None:
    user = new_user()
    await ingest(rt, user, "Baking notes", BREAD)
    service = chat_service(rt)
    prepared = await service.prepare(Access(user), ChatInput(query="Why does bread rise? How long should it proof?"))

    events = service.events(prepared)
    assert isinstance(await anext(events), SourcesEvent)
    first = await anext(events)
    assert isinstance(first, DeltaEvent)
    await events.aclose()  # what sse-starlette does when the client goes away

    stored = await history_of(rt).get_conversation(Access(user), prepared.turn.conversation_id)
    question, answer = stored.messages
    assert (question.role, question.status) == ("user", "complete")
    assert (answer.role, answer.status) == ("assistant", "incomplete")
    assert answer.content == first.text
    assert answer.sources and answer.sources[0]["number"] == 1
    # The conversation goes on normally after an interrupted turn.
    again = await service.answer(Access(user), ChatInput(query="Why does bread rise?",
                                                   conversation_id=prepared.turn.conversation_id))
    assert again.text
    assert len((await history_of(rt).get_conversation(Access(user), again.conversation_id)).messages) == 4


async def test_generator_failure_keeps_the_question_and_marks_the_answer_failed(rt: Any, tmp_path: Any) -> None:
    from rag_service.config import Settings
    from rag_service.providers.gemini_generator import GeminiGenerator

    user = new_user()
    await ingest(rt, user, "Baking notes", BREAD)
    settings = Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="test-key",
                        llm_timeout_seconds=2.0)
    service = chat_service(rt, generator=GeminiGenerator(settings, retry_policy=NO_RETRY))

    with respx.mock(assert_all_called=True) as gemini:
        gemini.route(url__regex=GEMINI_URL).respond(
            503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
        with pytest.raises(ProviderUnavailable):
            await service.answer(Access(user), ChatInput(query="Why does bread rise?"))

    page = await history_of(rt).list_conversations(Access(user), page=1, limit=10)
    assert page.total == 1
    stored = await history_of(rt).get_conversation(Access(user), page.conversations[0].id)
    assert [(m.role, m.content, m.status) for m in stored.messages] == [
        ("user", "Why does bread rise?", "complete"), ("assistant", "", "failed")]


async def test_embedder_failure_during_retrieval_keeps_the_question(rt: Any, tmp_path: Any) -> None:
    from rag_service.config import Settings
    from rag_service.providers.gemini_embedder import GeminiEmbedder

    user = new_user()
    settings = Settings(_env_file=None, data_dir=tmp_path, gemini_api_key="test-key", gemini_timeout_seconds=2.0)
    embedder = GeminiEmbedder(settings, retry_policy=NO_RETRY)
    service = chat_service(rt, embedder=embedder)

    with respx.mock(assert_all_called=True) as gemini:
        gemini.route(url__regex=GEMINI_URL).respond(
            503, json={"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
        with pytest.raises(ProviderUnavailable):
            await service.answer(Access(user), ChatInput(query="Why does bread rise?"))

    page = await history_of(rt).list_conversations(Access(user), page=1, limit=10)
    stored = await history_of(rt).get_conversation(Access(user), page.conversations[0].id)
    assert [(m.role, m.status) for m in stored.messages] == [("user", "complete"), ("assistant", "failed")]


async def test_bad_input_is_refused_before_anything_is_written(rt: Any) -> None:
    alice, bob = new_user(), new_user()
    service = chat_service(rt)
    alices = (await service.answer(Access(alice), ChatInput(query="hello there"))).conversation_id
    limit = rt.settings.max_query_chars

    with pytest.raises(Unprocessable, match="max_query_chars"):
        await service.answer(Access(bob), ChatInput(query="x" * (limit + 1)))
    with pytest.raises(Unprocessable, match="max_history_turns"):
        await service.answer(Access(bob), ChatInput(
            query="hi", history=(Turn(role="user", content="q"),) * (rt.settings.max_history_turns + 1)))
    with pytest.raises(NotFound):
        await service.answer(Access(bob), ChatInput(query="hi", conversation_id=alices))

    assert await row_counts(rt, bob) == (0, 0)
    assert await row_counts(rt, alice) == (1, 2)


async def test_a_full_conversation_is_refused_with_the_limit_named(rt: Any) -> None:
    user = new_user()
    service = chat_service(rt, max_messages=4)
    conversation_id = (await service.answer(Access(user), ChatInput(query="first question"))).conversation_id
    await service.answer(Access(user), ChatInput(query="second question", conversation_id=conversation_id))

    with pytest.raises(Unprocessable, match="max_messages_per_conversation"):
        await service.answer(Access(user), ChatInput(query="third question", conversation_id=conversation_id))
    assert await row_counts(rt, user) == (1, 4)
