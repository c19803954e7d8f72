"""History store (SQLite and Postgres) and the /history routes.

The store is exercised directly on both databases (real migrations, real SQL); the routes
on the shared app. Conversations are written through `ChatTurns.start_turn`/`finish_turn`,
the same calls the chat flow makes, and read through `HistoryService`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select

from rag_service.chat.turns import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_INCOMPLETE,
    ChatTurns,
    conversation_title,
)
from rag_service.errors import NotFound, Unprocessable
from rag_service.history.service import HistoryService
from rag_service.providers.base import Turn
from rag_service.storage.access import Access, unscoped
from rag_service.storage.models import Conversation, Document, Message

# Reading the tables directly, past every scope, to check what was (not) written.
INSPECTION = "test: checks the rows themselves"


def new_user() -> Access:
    return Access(f"user-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def history(db_sessionmaker: Any) -> HistoryService:
    return HistoryService(db_sessionmaker)


@pytest.fixture
def turns(db_sessionmaker: Any) -> ChatTurns:
    return ChatTurns(db_sessionmaker, max_history_turns=4, max_messages_per_conversation=6)


async def add_turn(turns: ChatTurns, user: Access, question: str, answer: str,
                   conversation_id: str | None = None, status: str = STATUS_COMPLETE) -> str:
    turn = await turns.start_turn(user, question, conversation_id)
    await turns.finish_turn(user, turn, content=answer, status=status,
                              sources=[{"number": 1, "document_id": f"d1-{user.user_id}", "title": "t", "chunk_index": 0,
                                        "score": 0.5, "snippet": "s"}] if answer else [])
    return turn.conversation_id


# --- the store, on SQLite and Postgres ---------------------------------------------------


async def test_pagination_newest_first(turns: ChatTurns, history: HistoryService) -> None:
    user = new_user()
    created = [await add_turn(turns, user, f"question number {i}", f"answer {i}") for i in range(25)]
    newest_first = list(reversed(created))

    pages = [await history.list_conversations(user, page=p, limit=10) for p in (1, 2, 3, 4)]

    assert [len(p.conversations) for p in pages] == [10, 10, 5, 0]
    assert all(p.total == 25 and p.pages == 3 for p in pages)
    assert [c.id for p in pages for c in p.conversations] == newest_first
    first = pages[0].conversations[0]
    assert first.title == "question number 24"
    assert first.message_count == 2
    assert first.last_message_preview == "answer 24"
    assert first.updated_at >= first.created_at


async def test_a_new_turn_moves_a_conversation_to_the_top(turns: ChatTurns, history: HistoryService) -> None:
    user = new_user()
    older = await add_turn(turns, user, "older question", "older answer")
    await add_turn(turns, user, "newer question", "newer answer")
    await add_turn(turns, user, "follow-up", "follow-up answer", conversation_id=older)

    page = await history.list_conversations(user, page=1, limit=10)

    assert page.conversations[0].id == older
    assert page.conversations[0].message_count == 4
    assert page.conversations[0].last_message_preview == "follow-up answer"
    assert page.conversations[0].title == "older question"  # the title stays the first question


async def cited_document(sessionmaker: Any, owner: str, user: Access, document_id: str = "d1") -> None:
    """The row of the document `add_turn`'s answers cite, saved by `user` for `owner`."""
    async with sessionmaker() as session:
        session.add(Document(id=f"{document_id}-{user.user_id}", user_id=user.user_id, owner=owner, title="t",
                             content="c", content_hash=uuid.uuid4().hex, status="ready"))
        await session.commit()


async def test_detail_lists_messages_in_order_with_sources_and_status(turns: ChatTurns, history: HistoryService,
                                                                      db_sessionmaker: Any) -> None:
    user = new_user()
    await cited_document(db_sessionmaker, user.user_id, user)
    conversation_id = await add_turn(turns, user, "first", "first answer [1]")
    await add_turn(turns, user, "second", "", conversation_id=conversation_id, status=STATUS_FAILED)

    detail = await history.get_conversation(user, conversation_id)

    assert [(m.role, m.content, m.status) for m in detail.messages] == [
        ("user", "first", STATUS_COMPLETE),
        ("assistant", "first answer [1]", STATUS_COMPLETE),
        ("user", "second", STATUS_COMPLETE),
        ("assistant", "", STATUS_FAILED),
    ]
    assert detail.messages[1].sources[0]["document_id"] == f"d1-{user.user_id}"
    assert detail.messages[3].sources == []
    assert detail.title == "first"


async def test_sources_the_caller_can_no_longer_read_are_not_shown(turns: ChatTurns, history: HistoryService,
                                                                   db_sessionmaker: Any) -> None:
    # An answer cited an organization's document; its author then left the organization.
    user, org = new_user(), "org:o-" + uuid.uuid4().hex[:8]
    member = Access(user.user_id, {org.removeprefix("org:"): "member"})
    await cited_document(db_sessionmaker, org, user)
    conversation_id = await add_turn(turns, member, "first", "first answer [1]")
    assert (await history.get_conversation(member, conversation_id)).messages[1].sources != []
    detail = await history.get_conversation(user, conversation_id)
    assert detail.messages[1].content == "first answer [1]" and detail.messages[1].sources == []


async def test_other_users_conversations_do_not_exist_for_them(turns: ChatTurns, history: HistoryService,
                                                               db_sessionmaker: Any) -> None:
    alice, bob = new_user(), new_user()
    alices = await add_turn(turns, alice, "alice's secret question", "alice's answer")

    with pytest.raises(NotFound):
        await history.get_conversation(bob, alices)
    with pytest.raises(NotFound):
        await history.delete_conversation(bob, alices)
    with pytest.raises(NotFound):  # nor can Bob append a turn to it
        await turns.start_turn(bob, "sneaky", alices)
    assert (await history.list_conversations(bob, page=1, limit=10)).total == 0

    detail = await history.get_conversation(alice, alices)
    assert len(detail.messages) == 2
    async with db_sessionmaker() as session:
        bobs_rows = await session.scalar(
            unscoped(select(func.count(Message.id)).where(Message.user_id == bob.user_id), INSPECTION))
    assert bobs_rows == 0


async def test_delete_removes_the_conversation_and_its_messages(turns: ChatTurns, history: HistoryService,
                                                                db_sessionmaker: Any) -> None:
    user = new_user()
    kept = await add_turn(turns, user, "keep me", "kept")
    gone = await add_turn(turns, user, "delete me", "deleted")

    await history.delete_conversation(user, gone)

    with pytest.raises(NotFound):
        await history.get_conversation(user, gone)
    with pytest.raises(NotFound):
        await history.delete_conversation(user, gone)
    async with db_sessionmaker() as session:
        leftover = await session.scalar(
            unscoped(select(func.count(Message.id)).where(Message.conversation_id == gone), INSPECTION))
        conversations = (await session.scalars(
            unscoped(select(Conversation.id).where(Conversation.user_id == user.user_id), INSPECTION))).all()
    assert leftover == 0
    assert conversations == [kept]


async def test_unknown_conversation_id_is_not_found(turns: ChatTurns, history: HistoryService) -> None:
    with pytest.raises(NotFound):
        await turns.start_turn(new_user(), "hello", str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await history.get_conversation(new_user(), "x" * 64)


async def test_recent_turns_are_bounded_and_skip_unfinished_answers(turns: ChatTurns) -> None:
    user = new_user()
    conversation_id = await add_turn(turns, user, "q1", "a1")
    await add_turn(turns, user, "q2", "partial", conversation_id=conversation_id, status=STATUS_INCOMPLETE)

    turn = await turns.start_turn(user, "q3", conversation_id)

    # max_history_turns=4: q1, a1, q2 (the incomplete answer is not context), nothing newer.
    assert turn.history == [Turn("user", "q1"), Turn("assistant", "a1"), Turn("user", "q2")]
    assert turn.created_conversation is False


async def test_a_full_conversation_refuses_more_turns_and_stays_unchanged(turns: ChatTurns,
                                                                          history: HistoryService) -> None:
    user = new_user()
    conversation_id = await add_turn(turns, user, "q1", "a1")
    await add_turn(turns, user, "q2", "a2", conversation_id=conversation_id)
    await add_turn(turns, user, "q3", "a3", conversation_id=conversation_id)  # 6 = the limit

    with pytest.raises(Unprocessable) as refused:
        await turns.start_turn(user, "q4", conversation_id)

    assert refused.value.code == "conversation_too_long"
    assert "max_messages_per_conversation" in refused.value.message
    assert len((await history.get_conversation(user, conversation_id)).messages) == 6


async def test_concurrent_turns_in_one_conversation_get_distinct_positions(db_sessionmaker: Any,
                                                                         history: HistoryService) -> None:
    turns = ChatTurns(db_sessionmaker, max_history_turns=4, max_messages_per_conversation=100)
    user = new_user()
    conversation_id = await add_turn(turns, user, "q0", "a0")

    await asyncio.gather(*(add_turn(turns, user, f"q{i}", f"a{i}", conversation_id) for i in range(1, 4)))

    messages = (await history.get_conversation(user, conversation_id)).messages
    assert len(messages) == 8
    assert sorted(m.content for m in messages if m.role == "user") == ["q0", "q1", "q2", "q3"]


def test_titles_are_the_first_question_shortened() -> None:
    assert conversation_title("  What   is\nfstab? ") == "What is fstab?"
    long_title = conversation_title("word " * 60)
    assert len(long_title) <= 80 and long_title.endswith("…")
    assert conversation_title("   ") == "New conversation"
