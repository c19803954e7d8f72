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
         [--baseline-points 2000] [--pgvector [--pgvector-url URL] [--only-compare]]
         [--write ../docs/benchmarks-search.md]
Figures depend on the machine (2 shared cores here); nothing asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shlex
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

DATASET = Path("/work/shared/datasets/manpages-dev")
DIM = 384
LIMIT = 10
MODES = ("hybrid", "dense", "keyword")


def load_texts() -> tuple[list[list[str]], list[str]]:
    pages = [json.loads(line)["text"].split() for line in (DATASET / "corpus.jsonl").open()]
    queries = [json.loads(line)["text"] for line in (DATASET / "queries.jsonl").open()]
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
            user_id=f"user-{i % users}",
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
        queries.append((vectors, access_filter(Access(target.user_id))))
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


def row(label: str, stats: dict[str, float]) -> str:
    return (f"| {label} | {stats['p50']:.2f} | {stats['p95']:.2f} | {stats['p99']:.2f} "
            f"| {stats['mean']:.2f} | {stats['qps']:,.0f} |")


HEADER = "| query | p50 ms | p95 ms | p99 ms | mean ms | queries/s (1 client) |\n|---|---:|---:|---:|---:|---:|"


async def compare_with_pgvector(args: argparse.Namespace, edge_store: EdgeVectorStore, edge_upsert_s: float,
                                points: list[ChunkPoint], queries, say: Callable[..., None]) -> None:
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
            say()
            say(f"### Qdrant Edge vs pgvector ({len(points):,} chunks, {args.users} users, top {LIMIT}, "
                f"one user's filter; queries interleaved between the stores)")
            say("Upsert through the adapters (HNSW kept up to date on each insert for pgvector; "
                "ANALYZE after the load): "
                f"Edge {len(points) / edge_upsert_s:,.0f} chunks/s ({edge_upsert_s:.1f} s), "
                f"pgvector {len(points) / pg_upsert_s:,.0f} chunks/s ({pg_upsert_s:.1f} s)")
            say()
            say("| query | Edge p50 ms | Edge p95 ms | pgvector p50 ms | pgvector p95 ms |")
            say("|---|---:|---:|---:|---:|")
            stats = await timed({
                f"{label} {mode}": [lambda q=q, w=w, m=mode, s=each: s.search(q, w, LIMIT, m) for q, w in queries]
                for mode in MODES for label, each in (("edge", edge_store), ("pgvector", store))
            })
            for mode in MODES:
                e, p = stats[f"edge {mode}"], stats[f"pgvector {mode}"]
                say(f"| {mode} | {e['p50']:.2f} | {e['p95']:.2f} | {p['p50']:.2f} | {p['p95']:.2f} |")
        finally:
            await store.close()


async def run(args: argparse.Namespace) -> list[str]:
    rng = random.Random(42)
    pages, query_texts = load_texts()
    out: list[str] = []

    def say(line: str = "") -> None:
        print(line, flush=True)
        out.append(line)

    start = time.perf_counter()
    points = make_points(args.points, args.users, pages, rng)
    say(f"Data: {args.points:,} chunks x {DIM}-d over {args.users} users; texts + BM25 encoding took "
        f"{time.perf_counter() - start:.1f} s. Each query: top {LIMIT}, filter on one user "
        f"(~{args.points // args.users:,} chunks), {args.queries} queries per row.")
    queries = make_queries(points, query_texts, args.queries, rng)

    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeVectorStore(Path(tmp) / "shard", collection="bench", dimension=DIM)
        await store.ensure_collection()
        start = time.perf_counter()
        for i in range(0, len(points), 5000):
            await store.upsert(points[i : i + 5000])
        edge_upsert_s = time.perf_counter() - start
        say(f"Qdrant Edge upsert: {edge_upsert_s:.1f} s")
        if args.pgvector:
            await compare_with_pgvector(args, store, edge_upsert_s, points, queries, say)
        if args.only_compare:
            await store.close()
            return out
        say()
        say("### Qdrant Edge as the service runs it (plain segments, exact search within the tenant)")
        say(HEADER)
        for mode, stats in (await measure_modes(store, queries)).items():
            say(row(mode, stats))

        if args.optimize:
            start = time.perf_counter()
            await store.optimize()
            say()
            say(f"### Qdrant Edge after optimize() ({time.perf_counter() - start:.1f} s: HNSW + segment merge)")
            say(HEADER)
            for mode, stats in (await measure_modes(store, queries)).items():
                say(row(mode, stats))

        say()
        say("### Hybrid prefetch depth (candidates per side; the store uses max(limit*4, 40))")
        say(HEADER)
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
        for label, stats in sweep.items():
            say(row(label, stats))

        say()
        say("### Keyword IDF scope (the store uses the tenant's own chunks)")
        say(HEADER)
        shard = store._open()

        def keyword_request(q: QueryVectors, w: ChunkFilter, scoped: bool) -> qe.QueryRequest:
            corpus = qe.SearchParams(idf=qe.IdfParams(corpus=edge_filter(ChunkFilter(user_id=w.user_id))))
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
        for label, stats in idf.items():
            say(row(label, stats))
        await store.close()

    if args.baseline_points:
        warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
        subset = points[: args.baseline_points]
        baseline = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="bench", dimension=DIM)
        await baseline.ensure_collection()
        start = time.perf_counter()
        await baseline.upsert(subset)
        say()
        say(f"### Baseline: qdrant-client local mode (`:memory:`), {len(subset):,} chunks "
            f"(upsert {time.perf_counter() - start:.1f} s), same adapter code as a Qdrant server")
        say(HEADER)
        few = make_queries(subset, query_texts, args.baseline_queries, rng)
        for mode, stats in (await measure_modes(baseline, few)).items():
            say(row(mode, stats))
        await baseline.close()
    return out


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
    parser.add_argument("--write", type=Path, help="also write the figures to this Markdown file")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = asyncio.run(run(args))
    took = f"Total run time: {time.perf_counter() - started:.0f} s."
    print(took)
    if args.write:
        # Several runs (e.g. the default and an `--optimize` one) append to one page.
        command = "cd rag-service && .venv/bin/python bench/search_latency.py " + shlex.join(sys.argv[1:])
        existing = args.write.read_text() if args.write.exists() else "# Search latency (vector store level)\n"
        section = "\n".join(["", f"## `{command.strip()}`", "", *lines, "", took, ""])
        args.write.write_text(existing + section)
        print(f"wrote {args.write}")

if __name__ == "__main__":
    main()
