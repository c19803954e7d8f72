"""One round of racing upload / reindex / delete / repair tasks for one user (used by
tests/test_ingestion_races.py), recording what each task saw.

No outcome depends on timing: a task that needs a document's id polls for its row until
the row exists or nothing can create it any more (every upload of the title finished, and
its delete, if any). A reindex that never saw the row of a deleted title was simply too
late, the same honest 404 as a reindex whose claim found the row gone.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from ingestion_support import Parts, new_user, paragraphs, repair_interrupted_ingestions, service, wait_for_row
from rag_service.errors import Conflict, NotFound

DOCUMENTS_PER_ROUND = 5
UPLOADS_PER_TITLE = 2
REINDEXES_PER_TITLE = 2


def with_lease(parts: Parts, lease: float) -> Parts:
    """The same stores seen by a repairer whose claim lease is `lease` seconds."""
    settings = parts.settings.model_copy(update={"ingest_claim_lease_seconds": lease})
    return Parts(settings, parts.engine, parts.sessionmaker, parts.vector_store, parts.sparse_encoder, parts.embedder)


class Round:
    def __init__(self, parts: Parts, thief: Parts, seed: int) -> None:
        self.parts, self.thief = parts, thief
        self.user = new_user()
        self.random = random.Random(seed)
        self.titles = [f"doc-{seed}-{i}" for i in range(DOCUMENTS_PER_ROUND)]
        self.contents = {t: paragraphs(t, 2 + i % 3) for i, t in enumerate(self.titles)}
        self.deleted_titles = set(self.titles[:2])
        self.deleted_ids: set[str] = set()
        self.outcomes: list[tuple[str, str, BaseException | None]] = []
        # Tasks that may still create (uploads) or remove (the delete) each title's row.
        self._uploads_left = dict.fromkeys(self.titles, UPLOADS_PER_TITLE)
        self._delete_left = {t: int(t in self.deleted_titles) for t in self.titles}

    async def jitter(self) -> None:
        await asyncio.sleep(self.random.random() * 0.05)

    def _uploads_done(self, title: str) -> Callable[[], bool]:
        return lambda: self._uploads_left[title] == 0

    def _settled(self, title: str) -> Callable[[], bool]:
        return lambda: self._uploads_left[title] == 0 and self._delete_left[title] == 0

    async def upload(self, title: str) -> None:
        try:
            await self.jitter()
            async with self.parts.sessionmaker() as session:
                await service(self.parts, session).save(self.user, title, self.contents[title])
        finally:
            self._uploads_left[title] -= 1

    async def reindex(self, title: str) -> None:
        document_id = await wait_for_row(self.parts, self.user, title, self._settled(title))
        if document_id is None:
            assert title in self.deleted_titles, f"{title} was never stored"
            raise NotFound("deleted before this reindex saw it")
        await self.jitter()
        async with self.parts.sessionmaker() as session:
            await service(self.parts, session).reindex(self.user, document_id)

    async def delete(self, title: str) -> None:
        try:
            # Only this task removes the row: once the uploads are done it exists or never will.
            document_id = await wait_for_row(self.parts, self.user, title, self._uploads_done(title))
            assert document_id is not None, f"{title} was never stored"
            self.deleted_ids.add(document_id)
            await self.jitter()
            async with self.parts.sessionmaker() as session:
                await service(self.parts, session).delete(self.user, document_id)
        finally:
            self._delete_left[title] -= 1

    async def steal(self) -> None:
        for _ in range(3):
            await self.jitter()
            await repair_interrupted_ingestions(self.thief)

    def tasks(self) -> list[tuple[str, str, Awaitable[Any]]]:
        tasks: list[tuple[str, str, Awaitable[Any]]] = []
        for title in self.titles:
            tasks += [("upload", title, self.upload(title)) for _ in range(UPLOADS_PER_TITLE)]
            tasks += [("reindex", title, self.reindex(title)) for _ in range(REINDEXES_PER_TITLE)]
            if title in self.deleted_titles:
                tasks.append(("delete", title, self.delete(title)))
        tasks += [("repair", "", self.steal()), ("repair", "", repair_interrupted_ingestions(self.parts))]
        self.random.shuffle(tasks)
        return tasks

    async def run(self) -> None:
        tasks = self.tasks()
        results = await asyncio.gather(*(coroutine for _, _, coroutine in tasks), return_exceptions=True)
        self.record(tasks, results)

    def record(self, tasks: list[tuple[str, str, Any]], results: list[Any]) -> None:
        self.outcomes = [(kind, title, r if isinstance(r, BaseException) else None)
                         for (kind, title, _), r in zip(tasks, results, strict=True)]

    def unexpected_errors(self) -> list[str]:
        """Errors other than the honest ones: 404 / 409 for a document that was deleted."""
        wrong = []
        for kind, title, error in self.outcomes:
            if error is None:
                continue
            honest = isinstance(error, (NotFound, Conflict)) and title in self.deleted_titles
            if not honest:
                wrong.append(f"{kind} {title}: {type(error).__name__}: {error}")
        return wrong
