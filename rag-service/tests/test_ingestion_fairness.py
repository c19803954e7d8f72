"""Fair ingestion: one account flooding the service cannot starve another's uploads.

The gate gives each account at most its share of the ingestion slots and hands a freed
slot to the account with the least indexing in flight (in estimated chunks); the encoder
serves accounts' sub-batches in turn (test_encoder_worker.py). Concurrent steps are ordered
by the gate's own state and by events, never by sleeping; the HTTP test runs on SQLite and
on PostgreSQL (the quota lock and the claims are there).
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select

from ingestion_support import SMALL_CHUNKS, check_invariant, new_user, paragraphs
from rag_service.config import Settings
from rag_service.documents.quotas import estimated_chunks
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.errors import ServiceUnavailable
from rag_service.storage.access import Access, scoped
from rag_service.storage.models import Document, DocumentStatus


async def hold_slot(gate: IngestionGate, account: str, cost: int, taken: asyncio.Event,
                    release: asyncio.Event) -> None:
    async with gate.slot(account, cost=cost):
        taken.set()
        await release.wait()


async def until(predicate) -> None:  # noqa: ANN001
    """Let the other tasks (and their worker threads) run until `predicate()` holds; the
    bound is a liveness deadline on a shared machine, not a timing assertion."""
    for _ in range(24_000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


async def test_one_account_holds_at_most_its_share_and_others_get_the_rest_at_once() -> None:
    gate = IngestionGate(4, wait_seconds=30)
    assert gate.per_account == 2
    release = asyncio.Event()
    taken = [asyncio.Event() for _ in range(3)]
    flood = [asyncio.create_task(hold_slot(gate, "flooder", 1_000, event, release)) for event in taken]
    await until(lambda: taken[0].is_set() and taken[1].is_set() and gate.waiting() == 1)
    assert not taken[2].is_set() and gate.in_flight("flooder") == 2
    # Another account is not queued behind the flood: it gets a free slot right away.
    other_taken = asyncio.Event()
    other = asyncio.create_task(hold_slot(gate, "other", 1, other_taken, release))
    await until(other_taken.is_set)
    assert gate.in_flight("other") == 1 and gate.waiting() == 1
    release.set()
    await asyncio.gather(*flood, other)
    assert gate.waiting() == 0 and gate.in_flight("flooder") == 0


async def test_a_freed_slot_goes_to_the_account_with_the_least_indexing_in_flight() -> None:
    gate = IngestionGate(2, wait_seconds=30, per_account=2)
    release_first = asyncio.Event()
    release_rest = asyncio.Event()
    first, second = asyncio.Event(), asyncio.Event()
    holders = [asyncio.create_task(hold_slot(gate, "flooder", 3_000, first, release_first)),
               asyncio.create_task(hold_slot(gate, "flooder", 3_000, second, release_rest))]
    await until(lambda: first.is_set() and second.is_set())
    # The flooder's third document queues first, the small one of another account after it.
    flood_third, small = asyncio.Event(), asyncio.Event()
    waiting = [asyncio.create_task(hold_slot(gate, "flooder", 3_000, flood_third, release_rest)),
               asyncio.create_task(hold_slot(gate, "other", 2, small, release_rest))]
    await until(lambda: gate.waiting() == 2)
    release_first.set()
    await until(small.is_set)
    # The other account had nothing in flight: it took the slot despite arriving later.
    assert not flood_third.is_set() and gate.waiting() == 1
    release_rest.set()
    await asyncio.gather(*holders, *waiting)


async def test_a_wait_past_the_timeout_is_busy_and_leaves_the_gate_consistent() -> None:
    gate = IngestionGate(1, wait_seconds=0.05)
    release, taken = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(hold_slot(gate, "a", 1, taken, release))
    await until(taken.is_set)
    with pytest.raises(ServiceUnavailable) as caught:
        async with gate.slot("b"):
            pass
    assert caught.value.code == "busy"
    assert gate.waiting() == 0
    release.set()
    await holder
    async with gate.slot("b"):
        assert gate.in_flight("b") == 1


def test_cost_is_estimated_in_chunks_of_the_extracted_text() -> None:
    settings = Settings(_env_file=None, chunk_size_tokens=200)
    assert estimated_chunks(0, settings) == 1
    assert estimated_chunks(800, settings) == 1
    assert estimated_chunks(800 * 3_000, settings) == 3_000


async def test_a_small_save_is_answered_while_another_account_floods(database_url, make_settings, app_factory,
                                                                     auth_headers) -> None:
    settings = make_settings(database_url=database_url, ingest_concurrency=4, ingest_queue_timeout_seconds=600,
                             **SMALL_CHUNKS)
    flooder, other = new_user(), new_user()
    flood_docs = 4
    async with app_factory(settings) as (app, client):
        runtime = app.state.runtime
        gate = runtime.ingestion_gate
        flood = [
            asyncio.create_task(client.post("/save-document", headers=auth_headers(flooder), timeout=600, json={
                "title": f"Flood {i}", "content": paragraphs(f"flood{i}", 600)}))
            for i in range(flood_docs)
        ]
        # The flood is under way: the flooder holds its share of the slots, the rest of
        # its documents wait, and its chunks are queued at the encoder.
        await until(lambda: gate.in_flight(flooder) == gate.per_account == 2 and gate.waiting() == 2)
        small = await client.post("/save-document", headers=auth_headers(other), timeout=600,
                                  json={"title": "Small", "content": "a short note that must not wait for the flood"})
        async with runtime.sessionmaker() as session:
            flood_statuses = (await session.scalars(
                scoped(select(Document.status), Access(flooder), Document))).all()
        assert small.status_code == 201, small.text
        # Answered while the flood was still being indexed, not after it.
        assert flood_statuses.count(DocumentStatus.READY) < flood_docs
        responses = await asyncio.gather(*flood)
        assert [response.status_code for response in responses] == [201] * flood_docs
        statuses = await check_invariant(runtime, [flooder, other])
        assert sorted(statuses.values()) == [DocumentStatus.READY] * (flood_docs + 1)
