"""Erasing what a deleted account or organization owned (the feed's `user.deleted` and
`organization.deleted`, applied by accounts/consumer.py).

`erase_owner(owner)`, for a user id or `org:<id>`:
1. under the owner's quota lock (storage/locks.py `owner_lock`, which every save and move into the
   owner's collections holds while it adds a row), claim every document of the owner for
   deletion: status `deleting`, generation + 1 (documents/claims.py). That revokes every
   ingestion run in progress: its heartbeat and final change match no row, and a run that
   lost its claim to a deletion removes every point of the document (indexing.Indexer);
2. remove the vectors: each claimed document's points (whatever owner they carry, e.g. old
   points of a move in flight), then every point carrying the owner key;
3. remove the `deleting` rows, then the owner's collections.
A failure part-way leaves rows `deleting`: applying the event again (the consumer's cursor
has not moved past it) or repair finishes the job.

`erase_user(user_id)` erases the user as an owner (personal collections, their documents and
vectors), then the rest of what names the user: conversations and messages are deleted;
documents the user saved into an organization's collection stay the organization's and stop
naming their uploader (`user_id` becomes the owner key), as do the organization collections
the user created (`created_by`). Quota usage is computed from the document rows, so nothing
else holds it. After it no row names the user and no point carries the user id.

Everything here is idempotent: applying an event twice changes nothing the second time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from rag_service.core.ingestion_gate import IngestionGate
from rag_service.storage.access import ORG_OWNER_PREFIX, document_points, org_owner, owner_points, unscoped
from rag_service.storage.locks import owner_lock
from rag_service.storage.models import Collection, Conversation, Document, DocumentStatus, Message, utcnow
from rag_service.storage.vectors import VectorStore

log = logging.getLogger(__name__)

# Why these statements span every row of one owner (storage/access.py).
ERASURE = "erasure: the auth-service deleted this account or organization"


@dataclass
class ErasureReport:
    documents: int = 0
    collections: int = 0
    conversations: int = 0
    # Documents and collections of organizations that stopped naming the erased user.
    reattributed: int = 0


class Eraser:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], vector_store: VectorStore,
                 gate: IngestionGate | None = None) -> None:
        self._sessionmaker = sessionmaker
        self._vector_store = vector_store
        self._gate = gate or IngestionGate(0, 0)

    async def erase_organization(self, organization_id: str) -> ErasureReport:
        return await self.erase_owner(org_owner(organization_id))

    async def erase_user(self, user_id: str) -> ErasureReport:
        if not user_id or user_id.startswith(ORG_OWNER_PREFIX):
            raise ValueError("not a user id")
        report = await self.erase_owner(user_id)
        async with self._sessionmaker() as session:
            documents = await session.execute(unscoped(
                update(Document).where(Document.user_id == user_id).values(user_id=Document.owner)
                .execution_options(synchronize_session=False), ERASURE))
            collections = await session.execute(unscoped(
                update(Collection).where(Collection.created_by == user_id).values(created_by=Collection.owner)
                .execution_options(synchronize_session=False), ERASURE))
            conversations = select(Conversation.id).where(Conversation.user_id == user_id)
            await session.execute(unscoped(
                delete(Message).where((Message.user_id == user_id) | Message.conversation_id.in_(conversations))
                .execution_options(synchronize_session=False), ERASURE))
            erased = await session.execute(unscoped(
                delete(Conversation).where(Conversation.user_id == user_id)
                .execution_options(synchronize_session=False), ERASURE))
            await session.commit()
        report.reattributed = documents.rowcount + collections.rowcount
        report.conversations = erased.rowcount
        return report

    async def erase_owner(self, owner: str) -> ErasureReport:
        async with self._sessionmaker() as session:
            async with owner_lock(session, self._gate.locks, owner):
                now = utcnow()
                claimed = list((await session.scalars(unscoped(
                    update(Document).where(Document.owner == owner)
                    .values(status=DocumentStatus.DELETING, generation=Document.generation + 1, claimed_at=now,
                            updated_at=now)
                    .returning(Document.id)
                    .execution_options(synchronize_session=False), ERASURE))).all())
                await session.commit()
        for document_id in claimed:
            await self._vector_store.delete(document_points(document_id))
        await self._vector_store.delete(owner_points(owner))
        async with self._sessionmaker() as session:
            documents = await session.execute(unscoped(
                delete(Document).where(Document.owner == owner, Document.status == DocumentStatus.DELETING)
                .execution_options(synchronize_session=False), ERASURE))
            collections = await session.execute(unscoped(
                delete(Collection).where(Collection.owner == owner)
                .execution_options(synchronize_session=False), ERASURE))
            await session.commit()
        return ErasureReport(documents=documents.rowcount, collections=collections.rowcount)
