"""The history reads: a caller's conversations, one conversation's messages, deleting one.

Every statement is scoped to the caller's `Access` (storage/access.py); another user's
conversation id behaves exactly like one that does not exist (404). The chat flow's writes
(one turn at a time) are in chat/turns.py.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag_service.errors import NotFound
from rag_service.history.records import ConversationOverview, ConversationPage, Transcript, TranscriptMessage
from rag_service.storage.access import Access, scoped
from rag_service.storage.models import Conversation, Document, Message

PREVIEW_MAX_CHARS = 160


def conversation_not_found(conversation_id: str) -> NotFound:
    return NotFound(f"conversation {conversation_id[:64]!r} not found")


async def find_conversation(session: AsyncSession, access: Access, conversation_id: str) -> Conversation:
    """The conversation, if `access` may see it; 404 otherwise."""
    if "\x00" in conversation_id:  # never in an id; PostgreSQL would refuse the query (500)
        raise conversation_not_found(conversation_id)
    conversation = (await session.execute(
        scoped(select(Conversation).where(Conversation.id == conversation_id), access, Conversation)
    )).scalar_one_or_none()
    if conversation is None:
        raise conversation_not_found(conversation_id)
    return conversation


class HistoryService:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def list_conversations(self, access: Access, page: int, limit: int) -> ConversationPage:
        """The caller's conversations, most recently active first."""
        # Both subqueries are correlated to the (scoped) conversation row of the outer query.
        message_count = (
            select(func.count(Message.id))
            .where(Message.conversation_id == Conversation.id)
            .correlate(Conversation)
            .scalar_subquery()
        )
        last_preview = (
            select(func.substr(Message.content, 1, PREVIEW_MAX_CHARS + 1))
            .where(Message.conversation_id == Conversation.id, Message.content != "")
            .order_by(Message.position.desc())
            .limit(1)
            .correlate(Conversation)
            .scalar_subquery()
        )
        async with self._sessionmaker() as session:
            total = (await session.execute(
                scoped(select(func.count(Conversation.id)), access, Conversation)
            )).scalar_one()
            rows = (await session.execute(
                scoped(select(Conversation, message_count, last_preview), access, Conversation)
                .order_by(Conversation.updated_at.desc(), Conversation.id.desc())
                .offset((page - 1) * limit)
                .limit(limit)
            )).all()
        overviews = [
            ConversationOverview(
                id=conversation.id, title=conversation.title, created_at=conversation.created_at,
                updated_at=conversation.updated_at, message_count=count, last_message_preview=_preview(preview or ""),
            )
            for conversation, count, preview in rows
        ]
        return ConversationPage(conversations=overviews, total=total, page=page, limit=limit)

    async def get_conversation(self, access: Access, conversation_id: str) -> Transcript:
        async with self._sessionmaker() as session:
            conversation = await find_conversation(session, access, conversation_id)
            messages = (await session.execute(
                scoped(select(Message).where(Message.conversation_id == conversation.id), access, Message)
                .order_by(Message.position)
            )).scalars().all()
            readable = await _readable_documents(session, access, messages)
        return Transcript(
            id=conversation.id, title=conversation.title, created_at=conversation.created_at,
            updated_at=conversation.updated_at,
            messages=[
                TranscriptMessage(id=m.id, role=m.role, content=m.content,
                                  sources=[source for source in m.sources or [] if source.get("document_id") in readable],
                                  status=m.status, created_at=m.created_at,
                                  answer_found=m.answer_found, generator=m.generator)
                for m in messages
            ],
        )

    async def delete_conversation(self, access: Access, conversation_id: str) -> None:
        async with self._sessionmaker() as session, session.begin():
            conversation = await find_conversation(session, access, conversation_id)
            # Messages first and explicitly: the FK cascade is not relied upon (SQLite
            # only enforces it with PRAGMA foreign_keys=ON).
            await session.execute(
                scoped(delete(Message).where(Message.conversation_id == conversation.id), access, Message)
            )
            await session.execute(
                scoped(delete(Conversation).where(Conversation.id == conversation.id), access, Conversation)
            )


async def _readable_documents(session: AsyncSession, access: Access, messages: Sequence[Message]) -> set[str]:
    """The cited documents the caller may still read. A source of a document deleted since,
    or of an organization the caller has left, is not shown again (its snippet is document
    text); the answer's own text stays: it is the caller's conversation."""
    cited = sorted({source.get("document_id") for m in messages for source in m.sources or []} - {None})
    readable: set[str] = set()
    for start in range(0, len(cited), 500):  # bounded IN lists
        readable.update((await session.scalars(
            scoped(select(Document.id).where(Document.id.in_(cited[start:start + 500])), access, Document)
        )).all())
    return readable


def _preview(content: str) -> str:
    text = re.sub(r"\s+", " ", content).strip()
    return text if len(text) <= PREVIEW_MAX_CHARS else text[: PREVIEW_MAX_CHARS - 1].rstrip() + "…"
