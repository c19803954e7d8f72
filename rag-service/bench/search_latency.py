"""Search latency of the vector store at scale: hybrid, dense and keyword queries,
filtered on one tenant, measured at the `VectorStore` level (`await store.search(...)`).

Data: `--points` chunks (default 100,000) spread over `--users` tenants (default 10).
Chunk texts are real: 80-200 word windows of the manpages corpus, BM25-encoded with the
service's SparseEncoder. Dense vectors are random unit vectors (384-d): embedding 100k
chunks with MiniLM would take ~10 minutes here, and latency does not depend on what the
vectors mean. Queries are the corpus' real one-line descriptions for the keyword side and
a perturbed copy of one of the tenant's vectors for the dense side.

Phases: Edge as the service runs it (plain segments: Edge has no background optimizer, so
a filtered search is an exact scan of the tenant's points through the tenant index), with
`--optimize` also Edge after `optimize()` (HNSW), a hybrid prefetch-depth sweep,
tenant-scoped vs global IDF, and qdrant-client's local mode (`:memory:`) on a smaller set
as the baseline. With `--pgvector`, the same chunks also go into the pgvector adapter (a new
database on --pgvector-url, default TEST_PGVECTOR_URL, else an embedded PostgreSQL 18 +
pgvector started for the run): upsert rate and search p50/p95 of Edge and pgvector side by
side, queries interleaved between the two stores.

Run: .venv/bin/python bench/search_latency.py [--points 100000] [--queries 300] [--optimize]
         [--baseline-points 2000] [--pgvector [--pgvector-url URL] [--only-compare]] [--report PATH]
Figures depend on the machine (2 shared cores here); nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path

import numpy as np
import qdrant_edge as qe
from qdrant_client import AsyncQdrantClient

import rag_service.storage.qdrant_edge as edge_module
from pgvector_database import pgvector_database
from rag_service.storage.access import Access, access_filter
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.qdrant_edge import EdgeVectorStore, edge_filter
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkFilter, ChunkPoint, QueryVectors

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402
from build_manpages_dataset import manpages_dataset  # noqa: E402

DIM = 384
LIMIT = 10
MODES = ("hybrid", "dense", "keyword")


def load_texts() -> tuple[list[list[str]], list[str]]:
    dataset = manpages_dataset()
    pages = [json.loads(line)["text"].split() for line in (dataset / "corpus.jsonl").open(encoding="utf-8")]
    queries = [json.loads(line)["text"] for line in (dataset / "queries.jsonl").open(encoding="utf-8")]
    return [p for p in pages if len(p) >= 20], queries


def make_points(n: int, users: int, pages: list[list[str]], rng: random.Random) -> list[ChunkPoint]:
    encoder = SparseEncoder()
    vectors = np.random.default_rng(7).standard_normal((n, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = []
    for _ in range(n):
        page = rng.choice(pages)
        length = rng.randint(80, 200)
        start = rng.randint(0, max(0, len(page) - length))
        texts.append(" ".join(page[start : start + length]))
    sparse = encoder.encode_documents(texts)
    return [
        ChunkPoint(
            id=str(uuid.UUID(int=rng.getrandbits(128))),
            owner=f"user-{i % users}",
            document_id=f"doc-{i % users}-{i // 50}",
            chunk_index=i % 50,
            text=texts[i],
            title="bench",
            start=0,
            end=len(texts[i]),
            dense=vectors[i].tolist(),
            sparse=sparse[i],
            metadata={"source": "manpages"},
        )
        for i in range(n)
    ]


def make_queries(points: list[ChunkPoint], texts: list[str], count: int, rng: random.Random):
    encoder = SparseEncoder()
    queries = []
    for _ in range(count):
        target = rng.choice(points)
        noisy = np.asarray(target.dense) + np.random.default_rng(rng.getrandbits(32)).normal(0, 0.05, DIM)
        noisy /= np.linalg.norm(noisy)
        vectors = QueryVectors(dense=noisy.tolist(), sparse=encoder.encode_query(rng.choice(texts)))
        queries.append((vectors, access_filter(Access(target.owner))))
    return queries


def percentiles(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return {"p50": pick(0.50), "p95": pick(0.95), "p99": pick(0.99), "mean": statistics.fmean(ms),
            "qps": len(ms) / (sum(ms) / 1000)}


async def timed(variants: dict[str, list[Callable[[], Awaitable]]]) -> dict[str, dict[str, float]]:
    """Latency of each variant, interleaved query by query so that load from neighbours on a
    shared machine hits every variant alike (comparisons stay fair even when levels drift)."""
    for calls in variants.values():
        for call in calls[:10]:  # warm-up
            await call()
    samples: dict[str, list[float]] = {label: [] for label in variants}
    for i in range(min(len(calls) for calls in variants.values())):
        for label, calls in variants.items():
            start = time.perf_counter()
            await calls[i]()
            samples[label].append(time.perf_counter() - start)
    return {label: percentiles(values) for label, values in samples.items()}


async def measure_modes(store, queries) -> dict[str, dict[str, float]]:
    return await timed({
        mode: [lambda q=q, w=w, m=mode: store.search(q, w, LIMIT, m) for q, w in queries] for mode in MODES
    })


def row(label: str, stats: dict[str, float]) -> list:
    return [label, f"{stats['p50']:.2f}", f"{stats['p95']:.2f}", f"{stats['p99']:.2f}", f"{stats['mean']:.2f}",
            round(stats["qps"])]


HEADERS = ["query", "p50 ms", "p95 ms", "p99 ms", "mean ms", "queries/s (1 client)"]


async def compare_with_pgvector(args: argparse.Namespace, edge_store: EdgeVectorStore, edge_upsert_s: float,
                                points: list[ChunkPoint], queries, report: Report) -> None:
    """Edge and pgvector on the same chunks: upsert rate and per-mode latency side by side."""
    async with pgvector_database(args.pgvector_url) as url:
        store = PgVectorStore(url, collection="bench", dimension=DIM)
        try:
            await store.ensure_collection()
            start = time.perf_counter()
            for i in range(0, len(points), 5000):
                await store.upsert(points[i : i + 5000])
            pg_upsert_s = time.perf_counter() - start
            # Planner statistics, as autovacuum would gather them shortly after a bulk load.
            import psycopg

            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute('ANALYZE "bench"')
            server = "given by --pgvector-url or TEST_PGVECTOR_URL" if (args.pgvector_url or os.environ.get(
                "TEST_PGVECTOR_URL")) else "an embedded PostgreSQL with pgvector started for the run"
            report.text(f"pgvector: {server}, a new database dropped at the end. Upsert through the adapters "
                        "(pgvector keeps its HNSW index up to date on each insert; ANALYZE after the load): "
                        f"Edge {len(points) / edge_upsert_s:,.0f} chunks/s ({edge_upsert_s:.1f} s), "
                        f"pgvector {len(points) / pg_upsert_s:,.0f} chunks/s ({pg_upsert_s:.1f} s).")
            stats = await timed({
                f"{label} {mode}": [lambda q=q, w=w, m=mode, s=each: s.search(q, w, LIMIT, m) for q, w in queries]
                for mode in MODES for label, each in (("edge", edge_store), ("pgvector", store))
            })
            rows = []
            for mode in MODES:
                e, p = stats[f"edge {mode}"], stats[f"pgvector {mode}"]
                rows.append([mode, f"{e['p50']:.2f}", f"{e['p95']:.2f}", f"{p['p50']:.2f}", f"{p['p95']:.2f}",
                             f"{p['p50'] / e['p50']:.1f}x"])
            report.table(["query", "Edge p50 ms", "Edge p95 ms", "pgvector p50 ms", "pgvector p95 ms",
                          "pgvector / Edge p50"], rows,
                         f"Qdrant Edge vs pgvector, {len(points):,} chunks, {args.users} users, top {LIMIT}, "
                         "one user's filter; queries interleaved between the stores")
        finally:
            await store.close()


async def run(args: argparse.Namespace, report: Report) -> None:
    rng = random.Random(42)
    pages, query_texts = load_texts()

    start = time.perf_counter()
    points = make_points(args.points, args.users, pages, rng)
    report.text(f"Data: {args.points:,} chunks x {DIM}-d over {args.users} users (random unit vectors; texts are "
                f"80-200 word windows of manpages-dev, BM25-encoded by the service's encoder in "
                f"{time.perf_counter() - start:.1f} s). Each query: top {LIMIT}, filtered on one user "
                f"(~{args.points // args.users:,} chunks), {args.queries} queries per row, the rows of a table "
                "interleaved query by query.")
    queries = make_queries(points, query_texts, args.queries, rng)

    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeVectorStore(Path(tmp) / "shard", collection="bench", dimension=DIM)
        await store.ensure_collection()
        start = time.perf_counter()
        for i in range(0, len(points), 5000):
            await store.upsert(points[i : i + 5000])
        edge_upsert_s = time.perf_counter() - start
        if args.pgvector:
            await compare_with_pgvector(args, store, edge_upsert_s, points, queries, report)
        if args.only_compare:
            await store.close()
            return
        report.text(f"Qdrant Edge upsert: {edge_upsert_s:.1f} s ({len(points) / edge_upsert_s:,.0f} chunks/s).")
        report.table(HEADERS, [row(mode, stats) for mode, stats in (await measure_modes(store, queries)).items()],
                     "Qdrant Edge as the service runs it (plain segments, exact search within the tenant)")

        if args.optimize:
            start = time.perf_counter()
            await store.optimize()
            took = time.perf_counter() - start
            report.table(HEADERS, [row(mode, stats) for mode, stats in (await measure_modes(store, queries)).items()],
                         f"Qdrant Edge after optimize() ({took:.1f} s: HNSW + segment merge)")

        original = edge_module.prefetch_limit

        def search_with_depth(q: QueryVectors, w: ChunkFilter, depth: int) -> Callable[[], Awaitable]:
            async def call():
                edge_module.prefetch_limit = lambda limit: depth
                return await store.search(q, w, LIMIT, "hybrid")
            return call

        try:
            sweep = await timed({
                f"hybrid, depth {depth}": [search_with_depth(q, w, depth) for q, w in queries]
                for depth in (20, 40, 80, 160)
            })
        finally:
            edge_module.prefetch_limit = original
        report.table(HEADERS, [row(label, stats) for label, stats in sweep.items()],
                     "Hybrid prefetch depth (candidates per side; the store uses max(limit*4, 40))")

        shard = store._open()

        def keyword_request(q: QueryVectors, w: ChunkFilter, scoped: bool) -> qe.QueryRequest:
            corpus = qe.SearchParams(idf=qe.IdfParams(corpus=edge_filter(ChunkFilter(owners=w.owners))))
            return qe.QueryRequest(limit=LIMIT, query=qe.Query.Nearest(qe.SparseVector(q.sparse.indices, q.sparse.values),
                                   using="bm25"), filter=edge_filter(w), params=corpus if scoped else None,
                                   with_payload=True)

        async def raw(request: qe.QueryRequest):
            return shard.query(request)

        with_terms = [(q, w) for q, w in queries if q.sparse.indices]
        idf = await timed({
            label: [lambda r=keyword_request(q, w, scoped): raw(r) for q, w in with_terms]
            for label, scoped in (("keyword, tenant IDF", True), ("keyword, global IDF", False))
        })
        report.table(HEADERS, [row(label, stats) for label, stats in idf.items()],
                     "Keyword IDF scope (the store uses the tenant's own chunks)")
        await store.close()

    if args.baseline_points:
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        subset = points[: args.baseline_points]
        baseline = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="bench", dimension=DIM)
        await baseline.ensure_collection()
        start = time.perf_counter()
        await baseline.upsert(subset)
        took = time.perf_counter() - start
        few = make_queries(subset, query_texts, args.baseline_queries, rng)
        report.table(HEADERS, [row(mode, stats) for mode, stats in (await measure_modes(baseline, few)).items()],
                     f"Baseline: qdrant-client local mode (`:memory:`), {len(subset):,} chunks (upsert {took:.1f} s), "
                     f"{len(few)} queries, same adapter code as a Qdrant server")
        await baseline.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", "--chunks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--baseline-points", type=int, default=2_000, help="0 to skip the local-mode baseline")
    parser.add_argument("--baseline-queries", type=int, default=30)
    parser.add_argument("--optimize", action="store_true",
                        help="also measure after optimize() builds HNSW (minutes at 100k points on 2 cores)")
    parser.add_argument("--pgvector", action="store_true", help="also fill pgvector and compare it with Edge")
    parser.add_argument("--pgvector-url", help="admin URL of a Postgres with pgvector (default TEST_PGVECTOR_URL, "
                        "else an embedded server)")
    parser.add_argument("--only-compare", action="store_true",
                        help="stop after the Edge vs pgvector table (skip the Edge sweeps and the baseline)")
    add_report_argument(parser)
    args = parser.parse_args()
    if args.only_compare:
        report = Report("Vector stores: Qdrant Edge vs pgvector (store level)",
                        baseline="Qdrant Edge (the embedded default) on the same chunks and queries, queries "
                        "interleaved between the stores in the same run")
    else:
        report = Report("Vector store search latency (Qdrant Edge, store level)",
                        baseline="qdrant-client's local mode on a subset of the same chunks (the same adapter code "
                        "as a Qdrant server), and within each table its rows against each other, interleaved "
                        "query by query in the same run")
    started = time.perf_counter()
    asyncio.run(run(args, report))
    report.text(f"Total run time: {time.perf_counter() - started:.0f} s. How to read it: these are "
                "`await store.search(...)` calls in one process with one client, without the query embedding "
                "(the retrieval, chat and load-test sections measure end to end). Dense vectors are random: latency "
                "does not depend on what they mean. Compare rows within a table" + (
                    "; Edge searches in-process, each pgvector search is a round trip to a server process and "
                    "SQL planning." if args.only_compare else "; the prefetch-depth and IDF tables show what the "
                    "store's settings cost against their alternatives."))
    report.write(args.report)


if __name__ == "__main__":
    main()
