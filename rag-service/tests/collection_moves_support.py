"""A round of moves between a user's default collection and an organization's, racing
deletes, reindexes and a claim-stealing repairer (used by tests/test_collections_races.py),
and the invariant afterwards: every ready document has exactly `chunk_count` points, all
under the row's owner key and collection, none under the other owner, no point without a row.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from sqlalchemy import select

from collections_support import new_org, owner_access, points_of
from ingestion_support import Parts, paragraphs, repair_interrupted_ingestions, service
from race_rounds import with_lease
from rag_service.collections.service import CollectionService
from rag_service.errors import Conflict, NotFound
from rag_service.storage.access import Access, access_filter, org_owner, unscoped
from rag_service.storage.models import Document, DocumentStatus
from security_support import new_user

DOCUMENTS_PER_MOVE_ROUND = 4


class MoveRound:
    """Documents saved in the admin's default collection, then moved to the organization's
    collection and back, re-indexed, some deleted, all at once, with a claim thief."""

    def __init__(self, parts: Parts, seed: int) -> None:
        self.parts, self.thief = parts, with_lease(parts, 0.001)
        self.random = random.Random(seed)
        self.org = new_org()
        self.access = Access(new_user(), {self.org: "admin"})
        self.seed = seed
        self.ids: list[str] = []
        self.deleted: set[str] = set()
        self.outcomes: list[tuple[str, str, BaseException | None]] = []

    async def prepare(self) -> None:
        async with self.parts.sessionmaker() as session:
            self.collection = (await CollectionService(session, max_collections_per_owner=200).create(self.access, "Shared", self.org)).id
            docs = service(self.parts, session)
            for i in range(DOCUMENTS_PER_MOVE_ROUND):
                text = paragraphs(f"m{self.seed}x{i}", 2 + i % 3)
                document, _ = await docs.save(self.access, f"m{self.seed}-{i}", text)
                self.ids.append(document.id)
        self.deleted = set(self.ids[:1])

    async def _step(self, kind: str, document_id: str) -> None:
        await asyncio.sleep(self.random.random() * 0.05)
        async with self.parts.sessionmaker() as session:
            docs = service(self.parts, session)
            if kind == "to-org":
                await docs.move(self.access, document_id, self.collection)
            elif kind == "to-personal":
                await docs.move(self.access, document_id, "personal")
            elif kind == "reindex":
                await docs.reindex(self.access, document_id)
            else:
                await docs.delete(self.access, document_id)

    async def steal(self) -> None:
        for _ in range(3):
            await asyncio.sleep(self.random.random() * 0.05)
            await repair_interrupted_ingestions(self.thief)

    async def run(self) -> None:
        tasks: list[tuple[str, str, Any]] = []
        for document_id in self.ids:
            kinds = ["to-org", "to-personal", "to-org", "reindex", "reindex"]
            kinds += ["delete"] if document_id in self.deleted else []
            tasks += [(kind, document_id, self._step(kind, document_id)) for kind in kinds]
        tasks.append(("repair", "", self.steal()))
        self.random.shuffle(tasks)
        results = await asyncio.gather(*(coroutine for _, _, coroutine in tasks), return_exceptions=True)
        self.outcomes = [(kind, doc, r if isinstance(r, BaseException) else None)
                         for (kind, doc, _), r in zip(tasks, results, strict=True)]

    def unexpected_errors(self) -> list[str]:
        """Only a document that was deleted may answer 404 / 409."""
        return [f"{kind} {doc}: {type(error).__name__}: {error}" for kind, doc, error in self.outcomes
                if error is not None and not (isinstance(error, (NotFound, Conflict)) and doc in self.deleted)]

    async def check_invariant(self) -> None:
        store, user_key, org_key = self.parts.vector_store, self.access.user_id, org_owner(self.org)
        async with self.parts.sessionmaker() as session:
            rows = (await session.execute(unscoped(
                select(Document.id, Document.owner, Document.collection_id, Document.status, Document.chunk_count)
                .where(Document.user_id == self.access.user_id),
                "test: the invariant is checked over every row this round's admin saved"))).all()
        problems = []
        for document_id, owner, collection_id, status, chunk_count in rows:
            expected = chunk_count if status == DocumentStatus.READY else 0
            other = org_key if owner == user_key else user_key
            placed = await store.count(access_filter(owner_access(owner), collection_id=collection_id,
                                                     document_ids=[document_id]))
            stored = await points_of(store, owner, document_id)
            stray = await points_of(store, other, document_id)
            if status not in (DocumentStatus.READY, DocumentStatus.FAILED) or (stored, placed, stray) != (
                    expected, expected, 0):
                problems.append(f"{document_id} {owner}/{collection_id}: {status}, {chunk_count} chunks, "
                                f"{stored} points ({placed} in its collection), {stray} under {other}")
        for document_id in self.deleted - {row.id for row in rows}:
            for key in (user_key, org_key):
                if left := await points_of(store, key, document_id):
                    problems.append(f"deleted {document_id}: {left} points under {key}")
        for key in (user_key, org_key):
            ready = sum(row.chunk_count for row in rows if row.owner == key and row.status == DocumentStatus.READY)
            if (total := await points_of(store, key)) != ready:
                problems.append(f"{key}: {total} points, {ready} in ready rows")
        assert not problems, "invariant broken:\n" + "\n".join(problems)
