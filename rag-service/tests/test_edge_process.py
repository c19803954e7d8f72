"""Qdrant Edge in a child process (`EdgeProcessStore`, the default): what the process boundary
adds to the shared contract (test_vector_store_contract.py runs it against this store too).

The child is real (a fresh interpreter owning a real shard); its death and stalls are real
signals: SIGKILL for a crash, SIGSTOP to hold a call in flight for as long as a test needs.
Waits on a process's exit are liveness deadlines, not speed assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import select
import signal
import subprocess
import sys
import textwrap
from multiprocessing import Pipe
from pathlib import Path

import pytest

from rag_service.errors import ServiceUnavailable
from rag_service.storage.access import Access, access_filter
from rag_service.storage.edge_process import EdgeProcessStore, next_request
from rag_service.storage.qdrant_edge import EdgeVectorStore
from vector_store_support import A1_KERNEL, ALICE, ALL_POINTS, DIM, query, unit

EXIT_DEADLINE_S = 30


def wait_exited(pid: int) -> None:
    """Until the process `pid` has exited (a pidfd turns readable), without reaping it."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:  # exited and reaped already
        return
    try:
        readable, _, _ = select.select([pidfd], [], [], EXIT_DEADLINE_S)
        assert readable, f"process {pid} still running {EXIT_DEADLINE_S} s later"
    finally:
        os.close(pidfd)


@pytest.fixture
async def store(tmp_path: Path):
    store = EdgeProcessStore(tmp_path / "shard", collection="c", dimension=DIM)
    await store.ensure_collection()
    await store.upsert(ALL_POINTS)
    yield store
    await store.close()


def search(store: EdgeProcessStore):  # noqa: ANN201
    return store.search(query("kernel scheduler", unit(1)), access_filter(Access(ALICE)), 3, "hybrid")


async def points_after_reopening(shard: Path) -> int:
    """Alice's points in the shard, opened by this process (so the child has released it)."""
    reopened = EdgeVectorStore(shard, collection="c", dimension=DIM)
    await reopened.ensure_collection()
    try:
        return await reopened.count(access_filter(Access(ALICE)))
    finally:
        await reopened.close()


async def test_the_shard_lives_in_the_child_only(store, tmp_path: Path):
    assert store.pid is not None and store.pid != os.getpid()
    # The child holds the shard: this process cannot open it beside it.
    with pytest.raises(ServiceUnavailable):
        await EdgeVectorStore(tmp_path / "shard", collection="c", dimension=DIM).ensure_collection()


async def test_a_killed_child_fails_the_call_in_flight_and_the_next_call_starts_another(store):
    first = store.pid
    os.kill(first, signal.SIGSTOP)  # the search below stays in flight until the kill
    in_flight = asyncio.create_task(search(store))
    await asyncio.sleep(0)  # one loop turn, not a timed wait: the task sends its request
    assert not in_flight.done()
    os.kill(first, signal.SIGKILL)
    # "exited" once the request was written, "gone" if the kill came first: both a 503.
    with pytest.raises(ServiceUnavailable, match="the Qdrant Edge process"):
        await in_flight
    wait_exited(first)

    # The next call starts another child, which reopens the shard: acknowledged writes kept.
    assert await store.count(access_filter(Access(ALICE))) == 3
    assert store.pid not in (None, first)
    assert (await search(store))[0].id == A1_KERNEL.id


async def test_calls_racing_after_a_death_start_one_child_between_them(store, tmp_path: Path):
    """Only one process may open the shard: concurrent first calls after a death share the
    replacement (the start lock), none fails and none starts a second child."""
    first = store.pid
    os.kill(first, signal.SIGKILL)
    wait_exited(first)
    counts = await asyncio.gather(*(store.count(access_filter(Access(ALICE))) for _ in range(8)))
    assert counts == [3] * 8
    replacement = store.pid
    assert replacement not in (None, first)
    # This shard's children only: other tests' stores in this process have children too.
    children = subprocess.run(["pgrep", "-P", str(os.getpid()), "-f",
                               f"edge_process .*--path {re.escape(str(tmp_path / 'shard'))} "],
                              capture_output=True, text=True, check=False).stdout.split()
    assert children == [str(replacement)]


async def test_health_reports_a_dead_child_and_the_next_probe_sees_its_replacement(store):
    assert await store.healthy() is True
    first = store.pid
    os.kill(first, signal.SIGKILL)
    wait_exited(first)
    assert await store.healthy() is False
    assert await store.healthy() is True
    assert store.pid not in (None, first)
    assert await store.count(access_filter(Access(ALICE))) == 3


async def test_the_event_loop_runs_while_a_call_waits_for_the_child(store):
    """The server only waits on a future while the child works: the loop runs callbacks and
    other coroutines meanwhile. Held deterministically: the child is stopped (SIGSTOP), so
    the search cannot finish until the loop has shown it is running."""
    loop = asyncio.get_running_loop()
    os.kill(store.pid, signal.SIGSTOP)
    try:
        pending = asyncio.create_task(search(store))
        ticks, ticked = 0, asyncio.Event()

        def tick() -> None:
            nonlocal ticks
            ticks += 1
            if ticks == 100:
                ticked.set()
            else:
                loop.call_soon(tick)

        loop.call_soon(tick)
        await ticked.wait()
        # 100 loop callbacks and this coroutine ran while the search was in flight.
        assert not pending.done()
    finally:
        os.kill(store.pid, signal.SIGCONT)
    assert (await pending)[0].id == A1_KERNEL.id


async def test_errors_cross_the_process_boundary_as_the_store_raises_them(store, tmp_path: Path):
    other = EdgeProcessStore(tmp_path / "other", collection="c", dimension=DIM)
    await other.ensure_collection()
    await other.close()
    wrong = EdgeProcessStore(tmp_path / "other", collection="c", dimension=DIM * 2)
    try:
        with pytest.raises(ServiceUnavailable, match="cannot open the vector store"):
            await wrong.ensure_collection()
        assert await wrong.healthy() is False
    finally:
        await wrong.close()
    # The child that failed a call keeps serving the others.
    with pytest.raises(ValueError, match="unknown search mode"):
        await store.search(query("kernel", unit(1)), access_filter(Access(ALICE)), 3, "fuzzy")  # type: ignore[arg-type]
    assert await store.count(access_filter(Access(ALICE))) == 3


async def test_close_flushes_and_stops_the_child(tmp_path: Path):
    store = EdgeProcessStore(tmp_path / "shard", collection="c", dimension=DIM)
    await store.ensure_collection()
    await store.upsert(ALL_POINTS)
    child = store.pid
    await store.close()
    assert store.pid is None
    with pytest.raises(ProcessLookupError):  # close() returns once the child has exited
        os.kill(child, 0)
    # Released and flushed: this process can open the shard and finds every point.
    assert await points_after_reopening(tmp_path / "shard") == 3


async def test_the_child_inherits_no_secret_of_the_server(tmp_path: Path, monkeypatch):
    secret = "s3cret-" + os.urandom(8).hex()
    monkeypatch.setenv("GEMINI_API_KEY", secret)
    monkeypatch.setenv("DATABASE_URL", f"postgresql://rag:{secret}@db/rag")
    store = EdgeProcessStore(tmp_path / "shard", collection="c", dimension=DIM)
    await store.ensure_collection()
    try:
        environment = Path(f"/proc/{store.pid}/environ").read_bytes().split(b"\0")
        assert not [entry for entry in environment if secret.encode() in entry]
        assert not [entry for entry in environment if entry.startswith((b"GEMINI_API_KEY=", b"DATABASE_URL="))]
    finally:
        await store.close()


async def test_health_is_503_while_the_child_is_dead_then_200_once_replaced(app_factory, make_settings, runtime):
    settings = make_settings()
    store = EdgeProcessStore(settings.data_dir / "qdrant" / "health", collection="health",
                             dimension=runtime.embedder.dimension)
    await store.ensure_collection()
    try:
        async with app_factory(settings, runtime=dataclasses.replace(runtime, settings=settings,
                                                                     vector_store=store)) as (_, client):
            assert (await client.get("/health")).status_code == 200
            first = store.pid
            os.kill(first, signal.SIGKILL)
            wait_exited(first)
            response = await client.get("/health")
            assert response.status_code == 503
            assert response.json()["services"]["qdrant"] is False
            assert response.json()["services"]["database"] is True
            # That probe started another child: the next one finds the store back.
            assert (await client.get("/health")).status_code == 200
            assert store.pid not in (None, first)
    finally:
        await store.close()


async def test_the_child_flushes_and_exits_when_the_server_dies(tmp_path: Path):
    """A server killed outright (SIGKILL: no close()) leaves no child holding the shard."""
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import asyncio, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from rag_service.storage.edge_process import EdgeProcessStore
        from vector_store_support import ALL_POINTS, DIM

        async def main():
            store = EdgeProcessStore({str(tmp_path / "shard")!r}, collection="c", dimension=DIM)
            await store.ensure_collection()
            await store.upsert(ALL_POINTS)
            print(store.pid, flush=True)
            sys.stdin.read()  # until killed

        asyncio.run(main())
    """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        child = int(server.stdout.readline())
        pidfd = os.pidfd_open(child)
    finally:
        server.kill()
        server.wait()
    try:
        readable, _, _ = select.select([pidfd], [], [], EXIT_DEADLINE_S)
        assert readable, f"the Edge child {child} outlived its server by {EXIT_DEADLINE_S} s"
    finally:
        os.close(pidfd)
    # The shard is released, with every acknowledged point.
    assert await points_after_reopening(tmp_path / "shard") == 3


def test_the_child_answers_waiting_reads_before_waiting_writes_which_keep_their_order():
    """While an ingestion's upserts queue in the child, a search sent after them goes first."""
    server, child = Pipe()
    for request in [(0, "upsert", ("a",)), (1, "delete", ("b",)), (2, "search", ()), (3, "upsert", ("c",)),
                    (4, "count", ())]:
        server.send(request)
    waiting: list = []
    answered = [next_request(child, waiting)[0] for _ in range(5)]
    assert answered == [2, 4, 0, 1, 3]
    server.send((5, "upsert", ("d",)))
    server.close()
    # The server is gone: what it sent is still handed out, then end of file.
    assert next_request(child, waiting)[0] == 5
    with pytest.raises(EOFError):
        next_request(child, waiting)
