"""Where the embedded vector store stops: hybrid search p50/p95 and queries/s at 10k, 100k
and 1M chunks, Qdrant Edge vs qdrant-client's local mode vs pgvector.

    .venv/bin/python bench/scale_curve.py [--sizes 10000,100000,1000000] [--users 10]
        [--queries 200] [--concurrency 8] [--local-max 10000] [--pgvector-max 100000]
        [--pgvector-url URL] [--quick] [--report PATH]

Store level (`await store.search(...)` through the service's adapters, what one search
costs after its query embedding): the chunks are written as bench/store_fill.py describes
(real repository texts and BM25 vectors, MiniLM vectors for the repository's own chunks,
random unit vectors for the rest; beyond 100k chunks the texts repeat). Every size keeps
--users tenants, so a user holds a tenth of the chunks. Each query is what `/search`
sends for top_k 5: hybrid, limit 15, one user's filter, a real MiniLM query vector and
BM25 query of the repository's Markdown headings. Per store and size: one client
(p50/p95 over --queries; --local-queries for the local mode, seconds per query at 10k),
then --concurrency concurrent callers (queries/s).
qdrant-client's local mode is measured up to --local-max chunks and pgvector up to
--pgvector-max (its HNSW index is kept up to date on each insert: ~300 chunks/s here, an
hour per million); a larger size is reported as not run, with the reason.
pgvector runs on --pgvector-url (default TEST_PGVECTOR_URL, else an embedded PostgreSQL 18 +
pgvector started for the run: `python ../scripts/test_postgres.py run -- ...`).
--quick (or BENCH_QUICK=1): sizes 2k and 10k, 50 queries. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "scripts"))
from bench_report import Report  # noqa: E402
from bench_texts import repo_queries  # noqa: E402
from pgvector_database import pgvector_database  # noqa: E402
from store_fill import build_corpus, fill_vector_store, shard_size_mb, user_of  # noqa: E402

from rag_service.storage.qdrant_edge import EdgeVectorStore  # noqa: E402
from rag_service.storage.sparse import SparseEncoder  # noqa: E402
from rag_service.storage.access import Access, access_filter  # noqa: E402
from rag_service.storage.vectors import QueryVectors  # noqa: E402

DIM = 384
LIMIT = 15  # top_k 5 x the search service's over-fetch of 3
POOL = 100_000  # distinct chunk texts; larger sizes repeat them


def query_vectors(texts: list[str]) -> list[QueryVectors]:
    from rag_service.providers.minilm_backends import TorchMiniLM
    from rag_service.providers.tokenizer import minilm_model_dir

    dense = TorchMiniLM(minilm_model_dir(), threads=0).encode(texts, "query")
    sparse = SparseEncoder()
    return [QueryVectors(dense=vector, sparse=sparse.encode_query(text)) for vector, text in zip(dense, texts, strict=True)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(store, queries: list[QueryVectors], users: int, count: int, concurrency: int) -> dict[str, float]:  # noqa: ANN001
    rng = random.Random(3)
    calls: list[Callable[[], Awaitable]] = [
        (lambda q=rng.choice(queries), u=rng.randrange(users): store.search(q, access_filter(Access(user_of(u, users))), LIMIT, "hybrid"))
        for _ in range(count)
    ]
    for call in calls[:5]:  # warm-up
        await call()
    latencies = []
    for call in calls:
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    pending = list(calls)

    async def caller() -> None:
        while pending:
            await pending.pop()()

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    rate = len(calls) / (time.perf_counter() - started)
    return {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95), "rate": rate}


async def run(args: argparse.Namespace, report: Report) -> None:
    began = time.perf_counter()
    corpus = build_corpus(pool=min(POOL, max(args.sizes)), real=args.real)
    texts = repo_queries(200)
    queries = query_vectors(texts)
    report.text(
        f"Data: {len(corpus.texts):,} distinct real chunk texts with BM25 vectors, {corpus.real} of them with "
        f"MiniLM vectors (the repository's own chunks), the rest random unit vectors, {args.users} users, "
        f"prepared in {time.perf_counter() - began:.0f} s; {len(texts)} queries (Markdown headings, real MiniLM "
        f"and BM25 query vectors), hybrid, limit {LIMIT}, one user's filter; {args.queries} queries per row "
        f"({args.local_queries} for the local mode), then the same queries from {args.concurrency} concurrent callers."
    )
    rows: list[list] = []
    skipped: list[str] = []
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
    with tempfile.TemporaryDirectory(prefix="rag-scale-bench-") as tmp:
        for size in args.sizes:
            for kind in ("Qdrant Edge (embedded default)", "qdrant-client local mode", "pgvector"):
                if kind.startswith("qdrant-client") and size > args.local_max:
                    skipped.append(f"{kind} at {size:,}: not run (above --local-max {args.local_max:,})")
                    continue
                if kind == "pgvector" and (size > args.pgvector_max or args.no_pgvector):
                    skipped.append(f"{kind} at {size:,}: not run (above --pgvector-max {args.pgvector_max:,})"
                                   if not args.no_pgvector else f"{kind}: not run (--no-pgvector)")
                    continue
                async with AsyncExitStack() as stack:
                    store, where = await open_store(kind, size, Path(tmp), args, stack)
                    fill_s = await fill_vector_store(store, corpus, size, args.users)
                    if kind == "pgvector":
                        await analyze(where)
                    count = min(args.queries, args.local_queries) if kind.startswith("qdrant-client") else args.queries
                    stats = await measure(store, queries, args.users, count, args.concurrency)
                    disk = f"{shard_size_mb(Path(where)):,.0f} MB" if kind.startswith("Qdrant Edge") else ""
                    rows.append([f"{size:,}", kind, f"{size / fill_s:,.0f}", stats["p50"], stats["p95"],
                                 stats["rate"], disk])
                    print(rows[-1], flush=True)
    report.table(["chunks", "store", "upsert chunks/s", "p50 ms", "p95 ms",
                  f"queries/s ({args.concurrency} callers)", "Edge shard on disk"], rows)
    if skipped:
        report.text("Not measured: " + "; ".join(skipped) + ".")


async def open_store(kind: str, size: int, tmp: Path, args: argparse.Namespace, stack: AsyncExitStack):  # noqa: ANN201
    if kind.startswith("Qdrant Edge"):
        path = tmp / f"edge-{size}"
        store = EdgeVectorStore(path, collection="bench", dimension=DIM)
        await store.ensure_collection()
        stack.push_async_callback(store.close)
        return store, str(path)
    if kind.startswith("qdrant-client"):
        from qdrant_client import AsyncQdrantClient

        from rag_service.storage.qdrant_server import ServerVectorStore

        store = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="bench", dimension=DIM)
        await store.ensure_collection()
        stack.push_async_callback(store.close)
        return store, ""
    from rag_service.storage.pgvector import PgVectorStore

    url = await stack.enter_async_context(pgvector_database(args.pgvector_url))
    store = PgVectorStore(url, collection="bench", dimension=DIM)
    await store.ensure_collection()
    stack.push_async_callback(store.close)
    return store, url


async def analyze(url: str) -> None:
    """Planner statistics, as autovacuum would gather them shortly after a bulk load."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
        await connection.execute('ANALYZE "bench"')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--sizes", help="comma-separated chunk counts (default 10000,100000,1000000)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--real", type=int, default=600)
    parser.add_argument("--queries", type=int)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--local-max", type=int, default=10_000)
    parser.add_argument("--local-queries", type=int, default=20, help="queries per row for the (slow) local mode")
    parser.add_argument("--pgvector-max", type=int, default=100_000)
    parser.add_argument("--pgvector-url")
    parser.add_argument("--no-pgvector", action="store_true")
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    default_sizes = "2000,10000" if args.quick else "10000,100000,1000000"
    args.sizes = [int(size) for size in (args.sizes or default_sizes).split(",")]
    args.queries = args.queries or (50 if args.quick else 200)
    if args.quick:
        args.real = min(args.real, 100)
    report = Report("Scale curve: hybrid search at 10k, 100k and 1M chunks, Edge vs local mode vs pgvector (issue 14)",
                    baseline="the three stores on the same chunks and queries, same run")
    asyncio.run(run(args, report))
    report.write(args.report)


if __name__ == "__main__":
    main()
