"""The ingestion claim protocol: a run that lost its claim changes nothing.

A document row carries `generation` and `claimed_at`. Every party that is about to write a
document's vectors or remove it first *claims* the row: one UPDATE that increments
`generation`, sets the status (`indexing` or `deleting`) and stamps `claimed_at`, and
commits (a new upload inserts generation 1). The new generation is the run's claim.

- A claim revokes every older one (reindex, repair of a stale row, delete): the run holding
  generation g-1 keeps computing, but its heartbeats (`heartbeat`) and its final change
  (`finish_ready` / `finish_failed`, conditional UPDATEs `WHERE id = .. AND generation =
  g-1 AND status = 'indexing'`) match no row any more.
- The run writes its points with ids uuid5(document, generation, chunk) and the generation
  in the payload, so two runs never write the same point. Before its final change it
  deletes points of older generations (and points without one).
- `claimed_at` is refreshed after every batch of vectors; no row matched -> the claim is
  lost and the run stops. A run that lost its claim changes nothing in SQL and removes only
  points of its own (or older) generation; the holder's points are newer and stay. If the
  row is gone it removes every point of the document.
- Delete marks the row `deleting` (claiming it), removes every vector of the document, then
  the row; a failure in between leaves it `deleting` until deleting again or repair
  finishes the job.
- A claim whose heartbeat is older than INGEST_CLAIM_LEASE_SECONDS (or, with the
  single-process Qdrant Edge store, older than this process) is stale: repair
  (maintenance.py, at start-up and periodically) takes it with `claim_stale`, `FOR UPDATE
  SKIP LOCKED` on Postgres, a compare-and-set on SQLite.

The vector side: one run is `indexing.Indexer`, delete is `DocumentService.delete`.

Each function commits (or rolls back) before returning: no transaction stays open while
the caller embeds or talks to the vector store.

Access: taking a claim for a caller (reindex, delete, move, the retry of a failed save) is
scoped to the rows the caller's `Access` may change (`write=True`); the run then holds the claim, and the statements keyed by it
(heartbeat, finish, the deleting row's removal) need no other scope. `claim_stale` is
system work: repair takes stale claims of every owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Update, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from rag_service.storage.access import Access, scoped, unscoped
from rag_service.storage.dialect import skip_locked
from rag_service.storage.models import Document, DocumentStatus, utcnow

# The heartbeat of a claim given up by an interrupted run: older than any cutoff.
RELEASED_CLAIM = datetime(2000, 1, 1, tzinfo=UTC)
# Why the statements keyed by a claim are not scoped to a caller (see the module docstring).
BY_CLAIM = "keyed by the document id and the generation of a claim this run holds"


@dataclass(frozen=True)
class Claim:
    document_id: str
    user_id: str
    generation: int
    status: str


async def _bump(session: AsyncSession, rows: Update, values: dict[str, Any]) -> int | None:
    """Claim the row `rows` selects (generation + 1); its new generation, or None."""
    now = utcnow()
    statement = (
        rows.values(generation=Document.generation + 1, claimed_at=now, updated_at=now, **values)
        .returning(Document.generation)
        .execution_options(synchronize_session=False)
    )
    generation = (await session.execute(statement)).scalar_one_or_none()
    await session.commit()
    return generation


def _caller_row(access: Access, document_id: str, *conditions: Any) -> Update:
    return scoped(update(Document).where(Document.id == document_id, *conditions), access, Document, write=True)


async def claim_for_reindex(session: AsyncSession, access: Access, document_id: str) -> int | None:
    """Take the row over for a new ingestion run (revoking any running one)."""
    return await _bump(
        session,
        _caller_row(access, document_id, Document.status != DocumentStatus.DELETING),
        {"status": DocumentStatus.INDEXING, "error": None},
    )


async def claim_for_system_reindex(session: AsyncSession, document_id: str) -> int | None:
    """`claim_for_reindex` for `rag reindex`, which rebuilds the documents of every owner."""
    return await _bump(
        session,
        unscoped(update(Document).where(Document.id == document_id, Document.status != DocumentStatus.DELETING),
                 "system: `rag reindex` rebuilds the vectors of every owner's documents"),
        {"status": DocumentStatus.INDEXING, "error": None},
    )


async def claim_failed_for_retry(session: AsyncSession, access: Access, document_id: str,
                                 **fields: Any) -> int | None:
    """Claim a `failed` row for a new save of the same content (None: someone else did)."""
    return await _bump(
        session,
        _caller_row(access, document_id, Document.status == DocumentStatus.FAILED),
        {"status": DocumentStatus.INDEXING, "error": None, "chunk_count": 0, **fields},
    )


async def claim_for_move(session: AsyncSession, access: Access, document_id: str, *, owner: str,
                         collection_id: str) -> int | None:
    """Put the row into another collection and take it over for a new ingestion run, which
    rewrites its points with the new owner and collection (the old points are an older
    generation: the run removes them). IntegrityError: the target holds the same content."""
    return await _bump(
        session,
        _caller_row(access, document_id, Document.status != DocumentStatus.DELETING),
        {"status": DocumentStatus.INDEXING, "error": None, "owner": owner, "collection_id": collection_id},
    )


async def claim_for_delete(session: AsyncSession, access: Access, document_id: str) -> int | None:
    """Mark the row `deleting`, revoking any ingestion claim."""
    return await _bump(session, _caller_row(access, document_id), {"status": DocumentStatus.DELETING})


async def heartbeat(session: AsyncSession, document_id: str, generation: int) -> bool:
    """Refresh the claim; False when it was lost (taken over, or the row is gone)."""
    return await _conditional(session, document_id, generation, {"claimed_at": utcnow()})


async def finish_ready(session: AsyncSession, document_id: str, generation: int, chunk_count: int) -> bool:
    return await _conditional(session, document_id, generation, {
        "status": DocumentStatus.READY, "chunk_count": chunk_count, "error": None,
        "claimed_at": None, "updated_at": utcnow(),
    })


async def finish_failed(session: AsyncSession, document_id: str, generation: int, message: str) -> bool:
    return await _conditional(session, document_id, generation, {
        "status": DocumentStatus.FAILED, "chunk_count": 0, "error": message,
        "claimed_at": None, "updated_at": utcnow(),
    })


async def release_for_repair(session: AsyncSession, document_id: str, generation: int) -> bool:
    """Give an interrupted claim up: the row stays `indexing` and is stale at once, so repair
    (start-up, or any replica's periodic pass) takes it over without waiting for the lease."""
    return await _conditional(session, document_id, generation, {"claimed_at": RELEASED_CLAIM})


async def _conditional(session: AsyncSession, document_id: str, generation: int, values: dict[str, Any]) -> bool:
    """Apply `values` only while `generation` still holds an `indexing` claim on the row."""
    result = await session.execute(unscoped(
        update(Document)
        .where(Document.id == document_id, Document.generation == generation,
               Document.status == DocumentStatus.INDEXING)
        .values(**values)
        .execution_options(synchronize_session=False),
        BY_CLAIM,
    ))
    await session.commit()
    return result.rowcount == 1


async def remove_deleted_row(session: AsyncSession, document_id: str) -> None:
    await session.execute(unscoped(
        delete(Document).where(Document.id == document_id, Document.status == DocumentStatus.DELETING)
        .execution_options(synchronize_session=False),
        "the row its deleter claimed (status `deleting`), after its vectors are gone",
    ))
    await session.commit()


async def current_state(session: AsyncSession, document_id: str) -> tuple[int, str] | None:
    """The row's (generation, status), or None when the row is gone."""
    row = (await session.execute(unscoped(
        select(Document.generation, Document.status).where(Document.id == document_id),
        "a run reads the state of the row it claimed, after losing the claim",
    ))).first()
    await session.commit()
    return None if row is None else (row.generation, row.status)


async def claim_stale(session: AsyncSession, stale_before: datetime) -> Claim | None:
    """Claim one `indexing` or `deleting` row whose heartbeat is older than `stale_before`.

    On Postgres the candidate is locked with `FOR UPDATE SKIP LOCKED`, so replicas
    repairing at the same time each take different rows and never wait on each other; the
    claim itself is the same compare-and-set on both databases (the generation seen must
    still be current), so a row claimed in between is skipped, never double-claimed.
    """
    stale = or_(Document.claimed_at.is_(None), Document.claimed_at < stale_before)
    query = unscoped(
        select(Document.id, Document.user_id, Document.generation, Document.status)
        .where(Document.status.in_([DocumentStatus.INDEXING, DocumentStatus.DELETING]), stale)
        .order_by(Document.claimed_at.asc().nulls_first(), Document.id)
        .limit(1),
        "system: repair finishes interrupted work of every owner",
    )
    query = skip_locked(session, query)
    while True:
        row = (await session.execute(query)).first()
        if row is None:
            await session.commit()
            return None
        document_id, user_id, seen, status = row
        generation = await _bump(session, unscoped(
            update(Document).where(Document.id == document_id, Document.generation == seen,
                                   Document.status == status, stale),
            "system: repair claims the stale row it just found",
        ), {})
        if generation is not None:
            return Claim(document_id, user_id, generation, status)
        # Claimed by someone else between the read and the update (SQLite): look again.
