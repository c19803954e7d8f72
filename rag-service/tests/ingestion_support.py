"""Helpers for the ingestion race, crash and quota tests: real parts and the invariant.

Written against APIs that also exist on the code before ingestion claims (so the race
suite can be run against it to show the failures it catches).
"""

from __future__ import annotations

import asyncio
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from rag_service.documents import maintenance
from rag_service.documents.service import DocumentService, DocumentServices
from rag_service.storage.access import Access, access_filter, scoped, unscoped
from rag_service.storage.models import Document, DocumentStatus


@dataclass
class Parts:
    """The parts of `rag_service.runtime.Runtime` the documents feature uses."""

    settings: Any
    engine: Any
    sessionmaker: Any
    vector_store: Any
    sparse_encoder: Any
    embedder: Any
    ingestion_gate: Any = None

    @property
    def documents(self) -> DocumentServices:
        return DocumentServices(self.sessionmaker, self.vector_store, self.sparse_encoder, self.embedder,
                                self.settings, gate=self.ingestion_gate)


async def repair_interrupted_ingestions(parts: Parts) -> int:
    """The repair pass of start-up and of the periodic task, over these parts."""
    return await maintenance.repair_interrupted_ingestions(parts.documents)


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:10]}"


# Small chunks keep the (real) embedding cheap while still giving every run several batches.
SMALL_CHUNKS = {"chunk_size_tokens": 40, "chunk_overlap_tokens": 0}


def paragraphs(seed: str, count: int) -> str:
    """Distinct text of about `count` chunks with SMALL_CHUNKS settings."""
    return "\n\n".join(
        f"{seed} part {i}: replica {seed} writes page {i} of its log and acknowledges commit {i * 7}."
        for i in range(count)
    )


def service(parts: Parts, session: Any, *, ingest_batch: int = 1, **overrides: Any) -> DocumentService:
    kwargs: dict[str, Any] = dict(vector_store=parts.vector_store, sparse_encoder=parts.sparse_encoder,
                                  embedder=parts.embedder, settings=parts.settings, ingest_batch=ingest_batch)
    if "gate" in inspect.signature(DocumentService).parameters:
        kwargs["gate"] = parts.ingestion_gate
    kwargs.update(overrides)
    return DocumentService(session, **kwargs)


async def wait_for_row(parts: Parts, user_id: str, title: str, settled: Callable[[], bool]) -> str | None:
    """The id of the user's document titled `title` once its row exists; None when it does
    not exist although `settled()` (nothing can create or remove it any more) held before
    the last look. No attempt limit: a slow machine only makes the polling slower.

    A row can come and go between two looks (uploaded, then deleted by another task), so a
    caller racing a delete must treat None as "deleted", never as "not yet".
    """
    while True:
        settled_before = settled()
        async with parts.sessionmaker() as session:
            found = await session.scalar(
                scoped(select(Document.id).where(Document.title == title), Access(user_id), Document))
        if found is not None:
            return found
        if settled_before:
            return None
        await asyncio.sleep(0.005)  # polling interval only; the outcome never depends on it


async def check_invariant(parts: Parts, users: list[str], deleted_ids: set[str] = frozenset()) -> dict[str, str]:
    """Assert the ingestion invariant for `users` at rest; returns {document id: status}.

    Every row is `ready` with exactly `chunk_count` vectors or `failed` with none; no row
    is left `indexing`; a deleted document has no vectors; and each user's vectors all
    belong to rows (their total is the sum of the rows' counts).
    """
    async with parts.sessionmaker() as session:
        rows = (await session.execute(unscoped(
            select(Document.id, Document.user_id, Document.status, Document.chunk_count)
            .where(Document.user_id.in_(users)),
            "test: the invariant is checked over every listed user's rows",
        ))).all()
    problems = []
    statuses = {}
    for document_id, user_id, status, chunk_count in rows:
        statuses[document_id] = status
        stored = await parts.vector_store.count(access_filter(Access(user_id), document_ids=[document_id]))
        expected = chunk_count if status == DocumentStatus.READY else 0
        if status not in (DocumentStatus.READY, DocumentStatus.FAILED) or stored != expected:
            problems.append(f"{document_id}: {status}, {chunk_count} chunks, {stored} vectors")
    for document_id in deleted_ids - statuses.keys():
        for user_id in users:
            stored = await parts.vector_store.count(access_filter(Access(user_id), document_ids=[document_id]))
            if stored:
                problems.append(f"deleted {document_id}: {stored} vectors without a row")
    for user_id in users:
        total = await parts.vector_store.count(access_filter(Access(user_id)))
        in_rows = sum(c for _, u, s, c in rows if u == user_id and s == DocumentStatus.READY)
        if total != in_rows:
            problems.append(f"{user_id}: {total} vectors stored, {in_rows} in ready rows")
    assert not problems, "invariant broken:\n" + "\n".join(problems)
    return statuses


async def until(condition: Callable[[], Awaitable[bool] | bool], what: str, deadline_seconds: float = 60) -> None:
    """Return once `condition()` holds (a state another task reaches: a lock waited for, a
    slot queued for), failing after `deadline_seconds`. The polling interval decides nothing."""
    deadline = time.monotonic() + deadline_seconds
    while True:
        held = condition()
        if held if isinstance(held, bool) else await held:
            return
        assert time.monotonic() < deadline, f"{what}: not within {deadline_seconds} s"
        await asyncio.sleep(0.005)
