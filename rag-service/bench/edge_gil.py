"""Does qdrant-edge-py release the GIL? Event-loop stalls while Edge works, inline vs in a thread.

A ticker on the event loop sleeps 1 ms at a time and records how late each wake-up is.
Meanwhile Edge runs (a) `--searches` hybrid searches of one tenant among `--points` points
and (b) a delete of one tenant's `--points` points, once inline on the loop (as the store
did for searches) and once in a worker thread (asyncio.to_thread). If Edge held the GIL,
the thread would stall the loop as much as the inline call; if it releases it, the worst
ticker delay drops to about a scheduler tick.

Run: .venv/bin/python bench/edge_gil.py [--points 20000] [--searches 1000] [--report PATH]
Figures depend on the machine (2 shared cores here); nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import qdrant_edge as qe

from rag_service.storage.access import Access, access_filter
from rag_service.storage.qdrant_edge import DELETE_BATCH, UPSERT_BATCH, EdgeVectorStore, edge_filter
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint, QueryVectors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402

DIM = 384
WORDS = "river delta mountain forest ocean valley desert glacier canyon island lake plain".split()


def make_points(n: int, user_id: str, rng: random.Random, encoder: SparseEncoder) -> list[ChunkPoint]:
    vectors = np.random.default_rng(7).standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [" ".join(rng.choice(WORDS) for _ in range(40)) for _ in range(n)]
    sparse = encoder.encode_documents(texts)
    points = []
    for i, text in enumerate(texts):
        points.append(ChunkPoint(
            id=str(uuid.uuid4()), owner=user_id, document_id=f"doc-{i // 20}", chunk_index=i % 20,
            text=text, title="t", start=0, end=len(text), dense=vectors[i].tolist(),
            sparse=sparse[i],
        ))
    return points


async def with_ticker(work: Callable[[], Awaitable[object]]) -> tuple[float, float, float, int]:
    """(wall seconds, p99 and max ticker delay in ms, ticks) while `await work()` runs."""
    delays: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(0.001)
            delays.append((time.perf_counter() - before - 0.001) * 1000)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    delays.clear()
    started = time.perf_counter()
    await work()
    wall = time.perf_counter() - started
    done.set()
    await task
    delays.sort()
    return wall, delays[max(0, int(len(delays) * 0.99) - 1)], delays[-1], len(delays)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--searches", type=int, default=1_000)
    add_report_argument(parser)
    args = parser.parse_args()
    report = Report("Qdrant Edge and the event loop", baseline="the ticker alone (idle) in the same run; each "
                    "operation inline on the event loop against the same operation in a worker thread")
    rng = random.Random(1)
    encoder = SparseEncoder()
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeVectorStore(tmp, "bench", DIM)
        await store.ensure_collection()
        shard = store._open()
        query = QueryVectors(dense=make_points(1, "q", rng, encoder)[0].dense,
                             sparse=encoder.encode_query("river forest canyon"))
        request = store.build_query(query, access_filter(Access("user-a")), 10, "hybrid", None)
        where = edge_filter(access_filter(Access("user-a")))
        points = make_points(args.points, "user-a", rng, encoder)

        async def searches_inline() -> None:
            for _ in range(args.searches):
                shard.query(request)
                await asyncio.sleep(0)  # one search per request, other work in between

        async def searches_thread() -> None:
            for _ in range(args.searches):
                await asyncio.to_thread(shard.query, request)

        async def delete_inline() -> None:
            shard.update(qe.UpdateOperation.delete_points_by_filter(where))

        async def delete_thread() -> None:
            await asyncio.to_thread(shard.update, qe.UpdateOperation.delete_points_by_filter(where))

        async def delete_store() -> None:
            await store.delete(access_filter(Access("user-a")))

        async def upsert_thread() -> None:
            await asyncio.to_thread(lambda: [shard.update(qe.UpdateOperation.upsert_points(
                [qe.Point(id=p.id, vector={"dense": p.dense, "bm25": qe.SparseVector(
                    indices=p.sparse.indices, values=p.sparse.values)}, payload=p.payload())
                 for p in points[i:i + 512]])) for i in range(0, len(points), 512)])

        async def upsert_store() -> None:
            await store.upsert(points)

        async def idle() -> None:
            await asyncio.to_thread(time.sleep, 0.5)

        table = []
        rows: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("idle: ticker alone, 0.5 s", idle),
            (f"upsert {args.points} points (thread, 512/op)", upsert_thread),
            ("delete, store.delete (thread, 256 ids/op)", delete_store),
            (f"upsert {args.points}, store.upsert ({UPSERT_BATCH}/op)", upsert_store),
            (f"{args.searches} hybrid searches, inline", searches_inline),
            (f"{args.searches} hybrid searches, to_thread", searches_thread),
            (f"delete {args.points} by filter, inline", delete_inline),
            (f"upsert {args.points} points (thread, 512/op)", upsert_thread),
            (f"delete {args.points} by filter, to_thread", delete_thread),
            (f"upsert {args.points} points (thread, 512/op)", upsert_thread),
            (f"delete {args.points}, store.delete ({DELETE_BATCH} ids/op)", delete_store),
        ]
        for label, work in rows:
            wall, p99, worst, ticks = await with_ticker(work)
            print(f"{label:46} {wall:7.2f} {p99:7.1f} {worst:7.1f} {ticks:6d}", flush=True)
            table.append([label, wall, p99, worst, ticks])
        assert shard.count(qe.CountRequest(exact=True)) == 0
        await store.close()
    report.text(f"A 1 ms ticker on the event loop records how late each wake-up is while Edge works on "
                f"{args.points:,} points (384-d + BM25) of one tenant; rows run one after the other, as listed.")
    report.table(["operation", "wall s", "ticker p99 delay ms", "ticker max delay ms", "ticks"], table)
    report.text("How to read it: if Edge released the GIL, an operation in a worker thread would let the ticker "
                "wake about every millisecond (many ticks, max delay near the idle row). A max delay close to the "
                "operation's wall time, or about one tick per search, means Edge holds the GIL for a whole call: "
                "a thread hop then frees nothing for one search (searches stay inline), and writes are cut into "
                "small calls in a worker thread so that each stall stays short.")
    report.write(args.report)


if __name__ == "__main__":
    asyncio.run(main())
