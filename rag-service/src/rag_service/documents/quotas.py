"""Storage quotas per owner, and what indexing a text will cost (`estimated_chunks`, the
ingestion gate's unit: core/ingestion_gate.py).

A document counts against the owner of its collection (storage/access.py): the user for a
personal collection (QUOTA_MAX_*), the organization for an organization's collection
(QUOTA_ORG_MAX_*), whoever saved it. A move moves the charge: it is checked against the
target owner's quota like a save.

Quota check and insert (or move) happen in one transaction that first takes the owner's
lock (storage/locks.py `owner_lock`), so replicas serialize one owner's additions. Concurrent uploads therefore cannot overshoot a quota
at all; the limit is on rows, so a document that failed to index still counts until it is
deleted. Erasure (accounts/erasure.py) takes the same lock, so an addition either lands
before it (and is erased) or after it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.config import Settings
from rag_service.core.locks import KeyedLocks
from rag_service.errors import PayloadTooLarge
from rag_service.storage.access import org_of, unscoped
from rag_service.storage.locks import owner_lock
from rag_service.storage.models import Document


class QuotaExceeded(PayloadTooLarge):
    code = "quota_exceeded"


def estimated_chunks(characters: int, settings: Settings) -> int:
    """What indexing a text will cost, in chunks (about 4 characters per token)."""
    return max(1, math.ceil(characters / (4 * max(1, settings.chunk_size_tokens))))


@dataclass(frozen=True)
class Usage:
    owner: str
    documents: int
    characters: int
    # 0 means unlimited.
    max_documents: int
    max_characters: int


def limits_of(owner: str, settings: Settings) -> tuple[int, int]:
    """(max documents, max characters) of an owner; 0 means unlimited."""
    if org_of(owner) is not None:
        return settings.quota_org_max_documents, settings.quota_org_max_characters
    return settings.quota_max_documents, settings.quota_max_characters


async def usage_of(session: AsyncSession, owner: str, settings: Settings) -> Usage:
    """What the collections of `owner` (a user id or `org:<id>`) hold, against its quota."""
    documents, characters = (await session.execute(unscoped(
        select(func.count(), func.coalesce(func.sum(Document.content_chars), 0)).where(Document.owner == owner),
        "quotas count an owner's documents, whoever saved them (the caller's scope was checked before)",
    ))).one()
    max_documents, max_characters = limits_of(owner, settings)
    return Usage(owner, int(documents), int(characters), max_documents, max_characters)


async def check_quota(session: AsyncSession, owner: str, new_characters: int, settings: Settings) -> None:
    """Inside `owner_lock`: QuotaExceeded (413) when one more document of `new_characters`
    would not fit; the transaction is ended (lock released) before raising."""
    usage = await usage_of(session, owner, settings)
    problem = _over_quota(usage, new_characters)
    if problem is not None:
        # Commit, not rollback: it only ends the read (and the lock) and, unlike a
        # rollback, leaves the session's other objects loaded.
        await session.commit()
        raise QuotaExceeded(problem, details={
            "owner": owner, "documents": usage.documents, "characters": usage.characters,
            "max_documents": usage.max_documents, "max_characters": usage.max_characters,
        })


async def insert_within_quota(session: AsyncSession, document: Document, settings: Settings,
                              locks: KeyedLocks) -> None:
    """Insert and commit `document`, or raise QuotaExceeded (413) and change nothing.

    IntegrityError (the same content inserted concurrently) propagates to the caller.
    """
    async with owner_lock(session, locks, document.owner):
        await check_quota(session, document.owner, document.content_chars, settings)
        session.add(document)
        await session.commit()


def _over_quota(usage: Usage, new_characters: int) -> str | None:
    setting = "QUOTA_ORG_MAX" if org_of(usage.owner) is not None else "QUOTA_MAX"
    whose = "the organization's" if org_of(usage.owner) is not None else "your"
    if usage.max_documents and usage.documents + 1 > usage.max_documents:
        return (f"document quota exceeded: {whose} collections hold {usage.documents} of {usage.max_documents} "
                f"documents ({setting}_DOCUMENTS); delete some to add more")
    if usage.max_characters and usage.characters + new_characters > usage.max_characters:
        return (f"character quota exceeded: {whose} collections hold {usage.characters} of {usage.max_characters} "
                f"characters and this document has {new_characters} ({setting}_CHARACTERS)")
    return None
