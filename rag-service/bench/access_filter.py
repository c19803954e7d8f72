"""What the organization access filter costs a search: hybrid, dense and keyword p50/p95 at
100k chunks across 10 users and 3 organizations, beside the per-user filter, same run.

    .venv/bin/python bench/access_filter.py [--chunks 100000] [--users 10] [--orgs 3]
        [--queries 200] [--real 600] [--pgvector [--pgvector-url URL]] [--report PATH]

Store level (`await store.search(...)` through the service's adapters, what a search costs
after its query embedding), with the filters `storage.access.access_filter` builds:
- per-user: `Access(user)` with no organization, one owner (`Equals` on the tenant key),
  the filter every search used before organizations;
- a user in 1 and in 2 organizations: `user_id IN (user, org:o1[, org:o2])`;
- narrowed to one collection of one of the user's organizations, and to the user's default
  personal collection (`collection_id` `personal`: points without one), for a user in 2.
Keyword IDF is computed over the same owners (the adapters do it for every search).

Data (bench/store_fill.py): real repository texts with their BM25 vectors, MiniLM vectors for
--real of them and random unit vectors for the rest, 50 chunks per document. Each
organization owns one document in ten (10% of the chunks each, in two collections); the other
documents are the users' own, round-robin, half in the default personal collection and half in
a personal collection of their own. Memberships: two users in no organization, four in one,
four in two (each organization has four members). Queries: the repository's Markdown
headings (real MiniLM and BM25 query vectors), limit 15 (what `/search` asks for top_k 5).
Every variant runs the same queries; callers rotate over the users of each kind; query by
query, every mode and variant runs once, in an order rotated each time, so that load from
neighbours on a shared machine hits all of them alike. Sequential, one client.
Checks (the run fails on a violation): `count` under each filter equals the chunks its
owners hold in that collection, and every hit's document belongs to an owner the caller may
read (and to the collection asked for).
With --pgvector the same chunks also go into pgvector (a new database on --pgvector-url,
default TEST_PGVECTOR_URL, else an embedded PostgreSQL 18 + pgvector started for the run:
`python ../scripts/test_postgres.py run -- ...`); its rows also name the indexes its planner
picks for each filter (EXPLAIN of the first caller's search). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402
from bench_texts import repo_queries  # noqa: E402
from org_layout import CYCLE, PER_USER, Caller, Check, Layout, variants  # noqa: E402
from pgvector_database import pgvector_database  # noqa: E402
from scale_curve import analyze, percentile, query_vectors  # noqa: E402
from store_fill import CHUNKS_PER_DOCUMENT, build_corpus, fill_vector_store  # noqa: E402

from rag_service.storage.qdrant_edge import EdgeVectorStore  # noqa: E402
from rag_service.storage.vectors import ChunkFilter, ChunkHit, QueryVectors  # noqa: E402

DIM = 384
LIMIT = 15  # top_k 5 x the search service's over-fetch of 3
MODES = ("hybrid", "dense", "keyword")


async def measure(store, queries: list[QueryVectors], callers: dict[str, list[Caller]], count: int,  # noqa: ANN001
                  check: Check) -> dict[tuple[str, str], dict[str, float]]:
    """p50/p95 and sequential queries/s of every (mode, variant), interleaved query by query."""
    labels = [(mode, variant) for mode in MODES for variant in callers]

    def call(mode: str, variant: str, i: int) -> Callable[[], Awaitable[list[ChunkHit]]]:
        caller = callers[variant][i % len(callers[variant])]
        return lambda: store.search(queries[i % len(queries)], caller.where, LIMIT, mode)

    for mode, variant in labels:  # warm-up
        for i in range(3):
            await call(mode, variant, i)()
    samples: dict[tuple[str, str], list[float]] = {label: [] for label in labels}
    for i in range(count):
        shift = i % len(labels)
        for mode, variant in labels[shift:] + labels[:shift]:
            search = call(mode, variant, i)
            started = time.perf_counter()
            hits = await search()
            samples[(mode, variant)].append((time.perf_counter() - started) * 1000)
            check.hits_of(callers[variant][i % len(callers[variant])], hits)
    return {label: {"p50": percentile(ms, 0.5), "p95": percentile(ms, 0.95), "rate": len(ms) / (sum(ms) / 1000)}
            for label, ms in samples.items()}


# pgvector's indexes by their name's last part (`ix_<digest>_<part>`); the primary key only joins.
INDEX_NAMES = {"dense": "HNSW", "terms": "terms GIN", "user": "owner btree",
               "collection": "owner+collection btree"}


async def pgvector_plan(store, query: QueryVectors, where: ChunkFilter, mode: str) -> str:  # noqa: ANN001
    """The indexes (or sequential scans) the planner picks for this search's statement."""
    from psycopg import sql

    from rag_service.storage.filters import sql_filter
    from rag_service.storage.pgvector import RRF_K, prefetch_limit, sparse_terms, vector_literal

    condition, params = sql_filter(where)  # the parameters PgVectorStore.search passes
    terms = sorted(sparse_terms(query.sparse))
    params.update(dense=vector_literal(query.dense), query_terms=terms, threshold=None, limit=LIMIT,
                  depth=prefetch_limit(LIMIT) if mode == "hybrid" else LIMIT, rrf_k=RRF_K)
    statement = sql.SQL("EXPLAIN (FORMAT JSON) ") + store._search_sql(mode, bool(terms), sql.SQL(condition))
    async with (await store._connections()).connection() as connection:
        [[plan]] = await (await connection.execute(statement, params)).fetchall()
    used: list[str] = []

    def walk(node: dict) -> None:
        name = node.get("Index Name", "")
        scans_chunks = node["Node Type"] == "Seq Scan" and node.get("Relation Name") == store.collection
        found = INDEX_NAMES.get(name.rsplit("_", 1)[-1]) if name else "seq scan" if scans_chunks else None
        if found and found not in used:
            used.append(found)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    return " + ".join(used) or "-"


async def open_store(kind: str, tmp: Path, args: argparse.Namespace, stack: AsyncExitStack):  # noqa: ANN201
    if kind == "Qdrant Edge":
        store = EdgeVectorStore(tmp / "edge", collection="bench", dimension=DIM)
        await store.ensure_collection()
        stack.push_async_callback(store.close)
        return store, None
    from rag_service.storage.pgvector import PgVectorStore

    url = await stack.enter_async_context(pgvector_database(args.pgvector_url))
    store = PgVectorStore(url, collection="bench", dimension=DIM)
    await store.ensure_collection()
    stack.push_async_callback(store.close)
    return store, url


async def run(args: argparse.Namespace, report: Report) -> None:
    began = time.perf_counter()
    layout = Layout(args.users, args.orgs)
    documents = args.chunks // CHUNKS_PER_DOCUMENT
    corpus = build_corpus(pool=min(100_000, args.chunks), real=args.real)
    texts = repo_queries(200)
    queries = query_vectors(texts)
    callers = variants(layout)
    members = {k: sum(len(layout.memberships(i)) == k for i in range(args.users)) for k in (0, 1, 2)}
    report.text(
        f"Data: {documents * CHUNKS_PER_DOCUMENT:,} chunks ({documents:,} documents of {CHUNKS_PER_DOCUMENT}) of "
        f"{len(corpus.texts):,} distinct real texts with BM25 vectors, {corpus.real} with MiniLM vectors, the rest "
        f"random unit vectors; {args.users} users and {args.orgs} organizations, each organization owning "
        f"{100 // CYCLE}% of the chunks (two collections), each user {(CYCLE - args.orgs) * 100 // CYCLE // args.users}% "
        f"(half of it in the default personal collection); {members[0]} users in no organization, {members[1]} in "
        f"one, {members[2]} in two; prepared in {time.perf_counter() - began:.0f} s. {len(texts)} queries (Markdown "
        f"headings, real MiniLM and BM25 query vectors), limit {LIMIT}, {args.queries} searches per row, every row "
        "of a store interleaved query by query in a rotating order, one client.")
    check = Check(layout, documents)
    kinds = ["Qdrant Edge"] + (["pgvector"] if args.pgvector else [])
    with tempfile.TemporaryDirectory(prefix="rag-access-bench-") as tmp:
        for kind in kinds:
            async with AsyncExitStack() as stack:
                store, url = await open_store(kind, Path(tmp), args, stack)
                fill_s = await fill_vector_store(store, corpus, args.chunks, args.users, place=layout.place)
                if url:
                    await analyze(url)
                searched: dict[str, int] = {}
                for variant, group in callers.items():
                    counts = [await store.count(c.where) for c in group]
                    for caller, counted in zip(group, counts, strict=True):
                        if counted != check.expected_count(caller):
                            check.violations.append(f"{kind} {variant}: count {counted} for {caller.access.user_id}, "
                                                    f"expected {check.expected_count(caller)}")
                    searched[variant] = round(sum(counts) / len(counts))
                stats = await measure(store, queries, callers, args.queries, check)
                probe = next(q for q in queries if q.sparse.indices)
                rows = []
                for mode in MODES:
                    base = stats[(mode, PER_USER)]["p95"]
                    for variant in callers:
                        s = stats[(mode, variant)]
                        ratio = f"{s['p95'] / base:.2f}x"
                        rows.append([mode, variant, f"{searched[variant]:,}", s["p50"], s["p95"], s["rate"], ratio])
                        if url:
                            rows[-1].append(await pgvector_plan(store, probe, callers[variant][0].where, mode))
                        print(f"{kind} {mode} {variant}: p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms, "
                              f"{ratio} the per-user p95", flush=True)
                report.table(["mode", "filter", "chunks it matches", "p50 ms", "p95 ms", "queries/s (1 client)",
                              "p95 / per-user p95", *(["plan (indexes)"] if url else [])], rows,
                             f"{kind}: {args.chunks:,} chunks, upserted in {fill_s:.0f} s "
                             f"({args.chunks / fill_s:,.0f} chunks/s)")
    if check.violations:
        raise SystemExit("access filter violations:\n" + "\n".join(check.violations[:20]))
    report.text(
        f"Checks: under every filter `count` matched the chunks of the owners (and collection) it reads, and all "
        f"{check.hits:,} hits ({check.org_hits:,} of them organizations' chunks) came from owners and collections "
        "the caller may read. How to read it: compare rows within a store and mode; \"chunks it matches\" is how many "
        "chunks the filter lets the search reach (averaged over the callers), which is what a wider filter costs: "
        "Edge scans the matching points exactly (plain segments, the owner key a tenant index), pgvector walks its "
        "HNSW index with the condition (iterative scan) or reads the owner index and sorts, as its planner picks for "
        "each filter (the plan column: what EXPLAIN shows for the first caller), and counts keyword IDF over the same "
        "owners. A user in no organization gets the per-user filter itself.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--orgs", type=int, default=3, help=f"organizations (each owns 1/{CYCLE} of the documents)")
    parser.add_argument("--queries", type=int, default=200, help="searches per row")
    parser.add_argument("--real", type=int, default=600, help="chunks with real MiniLM vectors")
    parser.add_argument("--pgvector", action="store_true", help="also measure pgvector on the same chunks")
    parser.add_argument("--pgvector-url", help="admin URL of a Postgres with pgvector (default TEST_PGVECTOR_URL, "
                        "else an embedded server)")
    add_report_argument(parser)
    args = parser.parse_args()
    if not 1 <= args.orgs < CYCLE:
        parser.error(f"--orgs must be between 1 and {CYCLE - 1}")
    if args.chunks < CYCLE * CHUNKS_PER_DOCUMENT * 2:
        parser.error(f"--chunks must be at least {CYCLE * CHUNKS_PER_DOCUMENT * 2:,} (every owner needs documents)")
    report = Report("Access filter: search with organizations beside the per-user filter (issue 17)",
                    baseline="the per-user filter (one owner, what every search used before organizations) on the "
                    "same chunks and queries, interleaved query by query in the same run")
    started = time.perf_counter()
    asyncio.run(run(args, report))
    report.text(f"Total run time: {time.perf_counter() - started:.0f} s.")
    report.write(args.report)


if __name__ == "__main__":
    main()
