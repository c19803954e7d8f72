"""Chat turns racing in one conversation, on real SQLite and PostgreSQL.

A turn allocates its message positions while holding the conversation's row lock, so
parallel turns queue instead of colliding on `messages(conversation_id, position)`; a turn
that cannot get the lock in time is a 409 `conversation_busy`, never a 500. Turns of one
user racing for the last of the history quota store at most the quota, on one process
and across replicas.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select, text

from rag_service.chat.turns import ChatTurns
from rag_service.core.locks import KeyedLocks
from rag_service.errors import PayloadTooLarge
from rag_service.storage.access import Access, unscoped
from rag_service.storage.models import Message

PARALLEL_TURNS = 16


async def _messages(sessionmaker: Any, conversation_id: str) -> list[Message]:
    async with sessionmaker() as session:
        return list((await session.execute(unscoped(
            select(Message).where(Message.conversation_id == conversation_id).order_by(Message.position),
            "test: every row of the conversation, as stored",
        ))).scalars())


async def test_parallel_turns_in_one_conversation_each_get_one_message_pair(
    db_client: Any, db_app: Any, auth_headers: Any
) -> None:
    headers = auth_headers()
    first = await db_client.post("/chat", json={"query": "first question"}, headers=headers)
    assert first.status_code == 200, first.text
    conversation_id = first.json()["conversation_id"]

    questions = [f"parallel question {n} {uuid.uuid4().hex[:6]}" for n in range(PARALLEL_TURNS)]
    responses = await asyncio.gather(*(
        db_client.post("/chat", json={"query": q, "conversation_id": conversation_id, "stream": False},
                       headers=headers)
        for q in questions
    ))

    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 409}, [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["error"]["code"] == "conversation_busy"
    answered = {q: r.json() for q, r in zip(questions, responses, strict=True) if r.status_code == 200}
    assert answered, "no parallel turn was answered"

    messages = await _messages(db_app.state.runtime.sessionmaker, conversation_id)
    assert [m.position for m in messages] == list(range(len(messages)))  # unique and contiguous
    assert len(messages) == 2 * (1 + len(answered))
    pairs = [messages[i:i + 2] for i in range(0, len(messages), 2)]
    assert all(user.role == "user" and reply.role == "assistant" for user, reply in pairs)
    by_question = {user.content: reply for user, reply in pairs}
    assert set(by_question) == {"first question", *answered}  # refused turns wrote nothing
    for question, body in answered.items():
        assert by_question[question].id == body["message_id"]
        assert by_question[question].status == "complete"


async def test_turn_waiting_too_long_for_the_conversation_is_409_and_writes_nothing(
    db_client: Any, db_app: Any, auth_headers: Any, user_id: str
) -> None:
    runtime = db_app.state.runtime
    turns = ChatTurns(runtime.sessionmaker, max_history_turns=2, turn_lock_timeout_s=0.2)
    turn = await turns.start_turn(Access(user_id), "hello")
    is_sqlite = runtime.engine.dialect.name == "sqlite"

    # Another writer holds the conversation (Postgres: its row lock; SQLite: the write lock).
    async with runtime.engine.connect() as holder:
        if is_sqlite:
            await holder.execute(text("UPDATE conversations SET title = title WHERE id = :id"),
                                 {"id": turn.conversation_id})
        else:
            await holder.execute(text("SELECT id FROM conversations WHERE id = :id FOR UPDATE"),
                                 {"id": turn.conversation_id})
        with pytest.raises(Exception) as refused:
            await turns.start_turn(Access(user_id), "second", turn.conversation_id)
        await holder.rollback()

    assert getattr(refused.value, "status_code", None) == 409
    assert getattr(refused.value, "code", None) == "conversation_busy"
    messages = await _messages(runtime.sessionmaker, turn.conversation_id)
    assert [m.content for m in messages] == ["hello", ""]


# --- the history quota under concurrent turns -------------------------------------------

HISTORY_QUOTA = 200
RACING_TURNS = 16


async def test_concurrent_turns_of_one_user_never_store_more_than_the_history_quota(
    db_sessionmaker: Any, database_url: str | None
) -> None:
    # Every turn's question fits the quota alone; together they are 16 x (20 + 30) = 800
    # characters against 200. On Postgres each turn gets its own ChatTurns and so its own
    # process locks, as on separate replicas: only the database's lock orders them.
    user = f"user-{uuid.uuid4().hex[:12]}"
    access = Access(user)
    shared_locks = KeyedLocks()
    start_together = asyncio.Barrier(RACING_TURNS)

    def turns() -> ChatTurns:
        locks = shared_locks if database_url is None else KeyedLocks()
        return ChatTurns(db_sessionmaker, max_history_turns=2, max_history_characters=HISTORY_QUOTA, locks=locks)

    async def turn(n: int) -> str | PayloadTooLarge:
        chat = turns()
        await start_together.wait()
        try:
            started = await chat.start_turn(access, f"racing question {n:04d}")
        except PayloadTooLarge as refused:
            return refused
        await chat.finish_turn(access, started, content=f"an answer of thirty chars {n:04d}",
                               sources=[], status="complete")
        return started.user_message_id

    outcomes = await asyncio.gather(*(turn(n) for n in range(RACING_TURNS)))

    answered = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, PayloadTooLarge)]
    assert answered and refused
    for error in refused:
        assert (error.status_code, error.code) == (413, "history_quota_exceeded")
    async with db_sessionmaker() as session:
        stored = list((await session.execute(unscoped(
            select(Message).where(Message.user_id == user), "test: the user's every message",
        ))).scalars())
    assert sum(len(m.content) for m in stored) <= HISTORY_QUOTA
    # Refused turns stored nothing: one question and one answer per answered turn.
    assert len(stored) == 2 * len(answered)
    assert {m.id for m in stored if m.role == "user"} == set(answered)
