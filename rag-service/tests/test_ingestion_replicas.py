"""Fair ingestion across replicas: an account's share of the ingestion slots is claimed in
Postgres (storage/locks.py `PostgresAccountSlots`), so two replicas together never give one
account more than INGEST_CONCURRENCY_PER_ACCOUNT slots, and a replica that dies frees its
slots with its connections.

Two replicas are two engines over one real Postgres database, each with its own gate.
Concurrent steps are ordered by events and by the gates' state, not by sleeping.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from rag_service.config import Settings
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.errors import ServiceUnavailable
from rag_service.storage.db import create_engine
from rag_service.storage.locks import INGEST_SLOT_NAMESPACE, PostgresAccountSlots, shared_account_slots
from test_ingestion_fairness import until

pytestmark = pytest.mark.postgres

PER_ACCOUNT = 2
RACING_CLAIMS = 24


@pytest_asyncio.fixture
async def replicas(make_postgres_database: Any) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    settings = Settings(_env_file=None, database_url=make_postgres_database())
    first, second = create_engine(settings), create_engine(settings)
    yield first, second
    await first.dispose()
    await second.dispose()


def gate_of(engine: AsyncEngine, wait_seconds: float = 60) -> IngestionGate:
    # Local concurrency well above the share: only the shared claim can hold an account back.
    return IngestionGate(8, wait_seconds=wait_seconds, per_account=PER_ACCOUNT, shared=PostgresAccountSlots(engine))


async def hold(gate: IngestionGate, account: str, taken: asyncio.Event, release: asyncio.Event) -> None:
    async with gate.slot(account):
        taken.set()
        await release.wait()


async def test_two_replicas_racing_for_one_account_never_hold_more_than_its_share(
    replicas: tuple[AsyncEngine, AsyncEngine]
) -> None:
    gates = [gate_of(engine) for engine in replicas]
    account = f"flooder-{uuid.uuid4().hex[:8]}"
    holding = 0
    most_held = 0
    start_together = asyncio.Barrier(RACING_CLAIMS)

    async def ingest(n: int) -> None:
        nonlocal holding, most_held
        await start_together.wait()
        async with gates[n % 2].slot(account):
            holding += 1
            most_held = max(most_held, holding)
            await asyncio.sleep(0)  # let every other claimant try while this one holds
            holding -= 1

    await asyncio.gather(*(ingest(n) for n in range(RACING_CLAIMS)))
    assert most_held <= PER_ACCOUNT
    assert holding == 0


async def test_an_account_at_its_share_on_one_replica_waits_on_the_other_and_others_do_not(
    replicas: tuple[AsyncEngine, AsyncEngine]
) -> None:
    first, second = gate_of(replicas[0]), gate_of(replicas[1], wait_seconds=0.3)
    account = f"flooder-{uuid.uuid4().hex[:8]}"
    release_one, release_rest = asyncio.Event(), asyncio.Event()
    taken = [asyncio.Event() for _ in range(PER_ACCOUNT)]
    holders = [asyncio.create_task(hold(first, account, taken[0], release_one)),
               *(asyncio.create_task(hold(first, account, event, release_rest)) for event in taken[1:])]
    await until(lambda: all(event.is_set() for event in taken))

    # Its whole share is held on the first replica: the second has free local slots but
    # gives the account none (busy after the wait), while another account gets one at once.
    with pytest.raises(ServiceUnavailable) as refused:
        async with second.slot(account):
            pass
    assert refused.value.code == "busy"
    assert second.in_flight(account) == 0
    async with second.slot("someone-else"):
        assert second.in_flight("someone-else") == 1

    # One slot freed on the first replica: the second replica's request gets it.
    release_one.set()
    await holders[0]
    patient = gate_of(replicas[1])
    async with patient.slot(account):
        assert patient.in_flight(account) == 1
    release_rest.set()
    await asyncio.gather(*holders)


async def test_a_crashed_holder_frees_its_slot(replicas: tuple[AsyncEngine, AsyncEngine]) -> None:
    crashing, survivor = replicas
    account = f"crasher-{uuid.uuid4().hex[:8]}"
    slots = PostgresAccountSlots(crashing)
    held = [await slots.try_claim(account, PER_ACCOUNT) for _ in range(PER_ACCOUNT)]
    assert all(slot is not None for slot in held)
    assert await PostgresAccountSlots(survivor).try_claim(account, PER_ACCOUNT) is None

    # The crashing replica's connections end without releasing anything. The timeout makes
    # pg_terminate_backend wait until each session has ended (and its locks are gone): without
    # it, it returns once the signal is sent (CI once claimed before a backend had exited).
    async with survivor.connect() as admin:
        ended = await admin.scalar(text(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 30000)) FROM pg_locks "
            "WHERE locktype = 'advisory' AND classid = :namespace "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ), {"namespace": INGEST_SLOT_NAMESPACE})
    assert ended == PER_ACCOUNT

    claimed = [await PostgresAccountSlots(survivor).try_claim(account, PER_ACCOUNT) for _ in range(PER_ACCOUNT)]
    assert all(slot is not None for slot in claimed)
    for slot in claimed:
        await slot.release()
    # The dead holder's release finds its connection gone: it fails, and hands no
    # possibly-locked connection back to the pool.
    for slot in held:
        with pytest.raises(DBAPIError):
            await slot.release()
    survivor_slots = PostgresAccountSlots(survivor)
    again = [await survivor_slots.try_claim(account, PER_ACCOUNT) for _ in range(PER_ACCOUNT)]
    assert all(slot is not None for slot in again)
    for slot in again:
        await slot.release()


def test_only_a_multi_process_postgres_deployment_shares_slots_through_the_database(
    replicas: tuple[AsyncEngine, AsyncEngine]
) -> None:
    assert isinstance(shared_account_slots(replicas[0], single_process=False), PostgresAccountSlots)
    assert shared_account_slots(replicas[0], single_process=True) is None
    assert shared_account_slots(create_async_engine("sqlite+aiosqlite://"), single_process=False) is None
