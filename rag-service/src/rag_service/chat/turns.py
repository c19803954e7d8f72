"""The chat flow's writes: one turn (a question and its answer) added to a conversation.

Every statement is scoped to the caller's `Access` (storage/access.py): a turn can only be
added to a conversation the caller may see, anything else is 404.

A chat turn is written in two short transactions, never one held open while the answer is
generated (SQLite has a single writer, and a model can take seconds):
1. `start_turn`: the user's question and an empty assistant message with status
   "incomplete" are committed before retrieval and generation start;
2. `finish_turn`: the assistant message gets its text, sources and final status
   ("complete", "failed", or stays "incomplete" with the partial text when the client left).
So a crash or disconnect at any point leaves a readable conversation, never a half row.

Turns in one conversation are serialized: `start_turn` first updates the conversation row,
which takes its row lock on PostgreSQL and the database's write lock on SQLite, and only
then reads the last position and the history. A parallel turn waits for that short
transaction (milliseconds) instead of colliding on `messages(conversation_id, position)`;
one that cannot get the lock within `turn_lock_timeout_s` is a 409 `conversation_busy`.
No counter column is needed: the lock makes `max(position) + 1` safe.

History is bounded per user (`max_history_characters`, QUOTA_MAX_HISTORY_CHARACTERS): the
characters of every stored question and answer count, and a turn whose question would not
fit is a 413 `history_quota_exceeded` that stores nothing (delete conversations to free
it). Both transactions of a turn run under the user's history lock (storage/locks.py
`owner_lock` on the key `history:<user id>`: the process's lock and, on Postgres, an
advisory lock, so replicas serialize too), so concurrent turns cannot both pass the check
on the same total. `finish_turn` stores the answer cut to what is left of the quota, so
the stored total never exceeds it (the client was shown the whole answer; only the copy
kept in history is shortened, and only at the quota's edge).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag_service.core.locks import KeyedLocks
from rag_service.errors import Conflict, PayloadTooLarge, Unprocessable
from rag_service.history.service import conversation_not_found, find_conversation
from rag_service.providers.base import Turn
from rag_service.storage.access import Access, scoped
from rag_service.storage.dialect import is_lock_timeout, lock_wait_bounded
from rag_service.storage.locks import owner_lock
from rag_service.storage.models import Conversation, Message, MessageRole, utcnow

TITLE_MAX_CHARS = 80
# A conversation holds at most this many messages (two per turn); beyond it the client
# starts a new conversation. Keeps history reads and LLM context bounded.
DEFAULT_MAX_MESSAGES_PER_CONVERSATION = 1000
# How long a turn waits for another turn of the same conversation to save its question.
DEFAULT_TURN_LOCK_TIMEOUT_S = 5.0

STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"
STATUS_FAILED = "failed"


def conversation_title(question: str) -> str:
    """The first question, whitespace collapsed, cut at a word boundary when long."""
    text = re.sub(r"\s+", " ", question).strip()
    if len(text) <= TITLE_MAX_CHARS:
        return text or "New conversation"
    cut = text[: TITLE_MAX_CHARS - 1]
    if " " in cut[TITLE_MAX_CHARS // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,.;:") + "…"


@dataclass(frozen=True)
class StartedTurn:
    """What `start_turn` saved, plus the earlier turns the answer may use."""

    conversation_id: str
    user_message_id: str
    assistant_message_id: str
    # Earlier messages, oldest first, at most `max_history_turns` of them; assistant
    # messages only when complete (a failed or cut-off answer is not context).
    history: list[Turn]
    created_conversation: bool


class ChatTurns:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        max_history_turns: int,
        max_messages_per_conversation: int = DEFAULT_MAX_MESSAGES_PER_CONVERSATION,
        turn_lock_timeout_s: float = DEFAULT_TURN_LOCK_TIMEOUT_S,
        max_history_characters: int = 0,
        locks: KeyedLocks | None = None,
    ) -> None:
        self._sessionmaker = sessionmaker
        # The process's locks, shared by every ChatTurns (the ingestion gate's `locks`);
        # a private one only serializes this object's own turns.
        self._locks = locks or KeyedLocks()
        # 0 = unlimited.
        self._max_history_characters = max_history_characters
        self._max_history_turns = max_history_turns
        self._max_messages = max_messages_per_conversation
        self._turn_lock_timeout_ms = max(1, int(turn_lock_timeout_s * 1000))

    async def start_turn(self, access: Access, question: str, conversation_id: str | None = None) -> StartedTurn:
        """Save the question and an "incomplete" assistant placeholder; 404 for a
        conversation the caller may not see; 422 when the conversation is full; 409
        `conversation_busy` when another turn of it holds the lock too long."""
        try:
            return await self._start_turn(access, question, conversation_id)
        except IntegrityError as exc:
            # Only reachable if a writer skipped the lock (e.g. an older replica mid-deploy).
            raise _busy() from exc

    async def _start_turn(self, access: Access, question: str, conversation_id: str | None) -> StartedTurn:
        async with self._transaction(access) as session:
            await self._check_history_quota(session, access, question)
            now = utcnow()
            history: list[Turn] = []
            if conversation_id is None:
                conversation = Conversation(user_id=access.user_id, title=conversation_title(question),
                                            created_at=now, updated_at=now)
                session.add(conversation)
                await session.flush()
                next_position = 0
            else:
                conversation = await self._lock_conversation(session, access, conversation_id, now)
                count, last_position = (await session.execute(scoped(
                    select(func.count(Message.id), func.max(Message.position))
                    .where(Message.conversation_id == conversation.id),
                    access, Message,
                ))).one()
                if count + 2 > self._max_messages:
                    raise Unprocessable(
                        f"conversation is full ({self._max_messages} messages, "
                        "max_messages_per_conversation): start a new conversation",
                        code="conversation_too_long",
                    )
                next_position = 0 if last_position is None else last_position + 1
                history = await self._recent_turns(session, access, conversation.id)
            user_message = Message(
                conversation_id=conversation.id, user_id=access.user_id, position=next_position,
                role=MessageRole.USER, content=question, sources=[], status=STATUS_COMPLETE, created_at=now,
            )
            assistant_message = Message(
                conversation_id=conversation.id, user_id=access.user_id, position=next_position + 1,
                role=MessageRole.ASSISTANT, content="", sources=[], status=STATUS_INCOMPLETE, created_at=now,
            )
            session.add_all([user_message, assistant_message])
            await session.flush()
            return StartedTurn(
                conversation_id=conversation.id,
                user_message_id=user_message.id,
                assistant_message_id=assistant_message.id,
                history=history,
                created_conversation=conversation_id is None,
            )

    async def finish_turn(
        self,
        access: Access,
        turn: StartedTurn,
        *,
        content: str,
        sources: list[dict[str, Any]],
        status: str,
        answer_found: bool | None = None,
        generator: str | None = None,
    ) -> None:
        """Give the assistant placeholder its final text, sources and status (and, for a
        complete answer, its outcome: `answer_found`, `generator`); the text is cut to what
        is left of the history quota."""
        async with self._transaction(access) as session:
            if self._max_history_characters:
                others = await history_characters(session, access, excluding=turn.assistant_message_id)
                content = content[: max(0, self._max_history_characters - others)]
            await session.execute(scoped(
                update(Message)
                .where(Message.id == turn.assistant_message_id, Message.conversation_id == turn.conversation_id)
                .values(content=content, sources=sources, status=status,
                        answer_found=answer_found, generator=generator),
                access, Message,
            ))
            await session.execute(scoped(
                update(Conversation).where(Conversation.id == turn.conversation_id).values(updated_at=utcnow()),
                access, Conversation,
            ))

    @asynccontextmanager
    async def _transaction(self, access: Access) -> AsyncIterator[AsyncSession]:
        """One transaction, committed at the end of the block; under the user's history lock
        when the history quota is on (the lock is released only after the commit)."""
        async with self._sessionmaker() as session:
            if not self._max_history_characters:
                async with session.begin():
                    yield session
                return
            async with owner_lock(session, self._locks, f"history:{access.user_id}"):
                try:
                    yield session
                except BaseException:
                    await session.rollback()
                    raise
                await session.commit()

    async def _check_history_quota(self, session: AsyncSession, access: Access, question: str) -> None:
        limit = self._max_history_characters
        if not limit:
            return
        used = await history_characters(session, access)
        if used + len(question) > limit:
            raise PayloadTooLarge(
                f"chat history quota exceeded: {used} of {limit} characters stored "
                "(QUOTA_MAX_HISTORY_CHARACTERS); delete conversations to continue",
                code="history_quota_exceeded",
                details={"history_characters": used, "max_history_characters": limit},
            )

    async def _recent_turns(self, session: AsyncSession, access: Access, conversation_id: str) -> list[Turn]:
        if self._max_history_turns <= 0:
            return []
        rows = (await session.execute(scoped(
            select(Message.role, Message.content, Message.status).where(Message.conversation_id == conversation_id),
            access, Message,
        ).order_by(Message.position.desc()).limit(self._max_history_turns * 2))).all()
        turns = [
            Turn(role=role, content=content)
            for role, content, status in reversed(rows)
            if content and (role == MessageRole.USER or status == STATUS_COMPLETE)
        ]
        return turns[-self._max_history_turns :]

    async def _lock_conversation(self, session: AsyncSession, access: Access, conversation_id: str,
                                 now: datetime) -> Conversation:
        """Take the conversation for this transaction (see the module docstring); 404 when
        the caller may not see it, 409 when the lock is not free in time."""
        if "\x00" in conversation_id:  # never in an id; PostgreSQL would refuse the query (500)
            raise conversation_not_found(conversation_id)
        try:
            async with lock_wait_bounded(session, self._turn_lock_timeout_ms):
                locked = await session.execute(scoped(
                    update(Conversation).where(Conversation.id == conversation_id).values(updated_at=now),
                    access, Conversation,
                ))
        except OperationalError as exc:
            if is_lock_timeout(exc):
                raise _busy() from exc
            raise
        if locked.rowcount == 0:
            raise conversation_not_found(conversation_id)
        return await find_conversation(session, access, conversation_id)


async def history_characters(session: AsyncSession, access: Access, *, excluding: str | None = None) -> int:
    """Characters of the caller's stored questions and answers (what the history quota
    counts), leaving out the message `excluding` (the answer about to be written)."""
    query = select(func.coalesce(func.sum(func.length(Message.content)), 0))
    if excluding is not None:
        query = query.where(Message.id != excluding)
    used = (await session.execute(scoped(query, access, Message))).scalar_one()
    return int(used)


def _busy() -> Conflict:
    return Conflict("another turn of this conversation is being saved; retry shortly",
                    code="conversation_busy", headers={"Retry-After": "1"})


