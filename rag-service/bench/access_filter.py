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
`python ../scripts/test_postgres.py run -- ...`). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402
from bench_texts import repo_queries  # noqa: E402
from pgvector_database import pgvector_database  # noqa: E402
from scale_curve import analyze, percentile, query_vectors  # noqa: E402
from store_fill import CHUNKS_PER_DOCUMENT, build_corpus, fill_vector_store  # noqa: E402

from rag_service.auth.orgs import OrgRole  # noqa: E402
from rag_service.storage.access import Access, access_filter, org_owner  # noqa: E402
from rag_service.storage.qdrant_edge import EdgeVectorStore  # noqa: E402
from rag_service.storage.vectors import DEFAULT_COLLECTION, ChunkFilter, ChunkHit, QueryVectors  # noqa: E402

DIM = 384
LIMIT = 15  # top_k 5 x the search service's over-fetch of 3
MODES = ("hybrid", "dense", "keyword")
CYCLE = 10  # of every ten documents, one per organization; the rest are users' own
PER_USER = "per-user filter (no organization)"


def collection_id(name: str) -> str:
    """A collection id as the service makes them (a UUID), stable across runs."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"rag-bench/{name}"))


@dataclass(frozen=True)
class Layout:
    """Who owns each document, in which collection, and who belongs to which organization."""

    users: int
    orgs: int

    def user(self, index: int) -> str:
        return f"bench-user-{index}"

    def org(self, index: int) -> str:
        return f"bench-org-{index}"

    def org_collection(self, org: int, half: int) -> str:
        return collection_id(f"org-{org}-{'ab'[half]}")

    def place(self, document: int) -> tuple[str, str]:
        """(owner key, collection id) of a document's chunks."""
        cycle, slot = divmod(document, CYCLE)
        if slot < self.orgs:
            return org_owner(self.org(slot)), self.org_collection(slot, cycle % 2)
        personal = cycle * (CYCLE - self.orgs) + slot - self.orgs  # the n-th personal document
        owner, turn = self.user(personal % self.users), personal // self.users
        return owner, DEFAULT_COLLECTION if turn % 2 == 0 else collection_id(f"{owner}-notes")

    def memberships(self, index: int) -> tuple[int, ...]:
        """Five users in a row: none, one, two, one, two organizations (2/4/4 of ten)."""
        kind = index % 5
        count = 0 if kind == 0 else 1 if kind in (1, 3) else 2
        return tuple(sorted({(index + k) % self.orgs for k in range(count)}))

    def access(self, index: int) -> Access:
        orgs = self.memberships(index)
        # Roles do not change what a member reads; the first of each user's is admin for realism.
        return Access(self.user(index), {self.org(o): OrgRole.ADMIN if k == 0 else OrgRole.MEMBER
                                         for k, o in enumerate(orgs)})


@dataclass(frozen=True)
class Caller:
    access: Access
    where: ChunkFilter
    readable: frozenset[tuple[str, str | None]]  # (owner, collection or None: any) it may get hits from


def variants(layout: Layout) -> dict[str, list[Caller]]:
    """Each filter variant, as the callers it rotates over."""
    everyone = [layout.access(i) for i in range(layout.users)]
    in_one = [a for a in everyone if len(a.orgs) == 1]
    in_two = [a for a in everyone if len(a.orgs) == 2]
    if not in_one or not in_two:
        raise SystemExit("needs --users 5 and --orgs 2 or more: some users in one organization, some in two")

    def any_collection(access: Access) -> frozenset[tuple[str, str | None]]:
        return frozenset((owner, None) for owner in access.readable_owners)

    def org_collection(access: Access, org: str, half: int) -> Caller:
        chosen = layout.org_collection(int(org.rsplit("-", 1)[1]), half)
        return Caller(access, access_filter(access, collection_id=chosen), frozenset({(org_owner(org), chosen)}))

    return {
        PER_USER: [Caller(Access(a.user_id), access_filter(Access(a.user_id)), frozenset({(a.user_id, None)}))
                   for a in everyone],
        "user in 1 organization": [Caller(a, access_filter(a), any_collection(a)) for a in in_one],
        "user in 2 organizations": [Caller(a, access_filter(a), any_collection(a)) for a in in_two],
        # Every collection of each of their organizations, users and organizations alternating.
        "user in 2, one organization collection": [
            org_collection(a, a.orgs[k][0], half) for half in (0, 1) for k in (0, 1) for a in in_two],
        "user in 2, personal collection": [
            Caller(a, access_filter(a, collection_id=DEFAULT_COLLECTION), frozenset({(a.user_id, DEFAULT_COLLECTION)}))
            for a in in_two],
    }


class Check:
    """The correctness invariants, counted over every search of the run."""

    def __init__(self, layout: Layout, documents: int) -> None:
        self.placed = {f"bench-doc-{d:07d}": layout.place(d) for d in range(documents)}
        self.hits = self.org_hits = 0
        self.violations: list[str] = []

    def expected_count(self, caller: Caller) -> int:
        return CHUNKS_PER_DOCUMENT * sum(
            (owner, None) in caller.readable or (owner, collection) in caller.readable
            for owner, collection in self.placed.values())

    def hits_of(self, caller: Caller, hits: list[ChunkHit]) -> None:
        for hit in hits:
            owner, collection = self.placed[hit.document_id]
            self.hits += 1
            self.org_hits += owner.startswith("org:")
            if (owner, None) not in caller.readable and (owner, collection) not in caller.readable:
                self.violations.append(f"{caller.access.user_id} got a chunk of {owner} ({collection})")


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
                rows = []
                for mode in MODES:
                    base = stats[(mode, PER_USER)]["p95"]
                    for variant in callers:
                        s = stats[(mode, variant)]
                        rows.append([mode, variant, f"{searched[variant]:,}", s["p50"], s["p95"], s["rate"],
                                     f"{s['p95'] / base:.2f}x"])
                        print(f"{kind} {mode} {variant}: p50 {s['p50']:.2f} ms, p95 {s['p95']:.2f} ms, "
                              f"p95 {rows[-1][-1]} the per-user p95", flush=True)
                report.table(["mode", "filter", "chunks it matches", "p50 ms", "p95 ms", "queries/s (1 client)",
                              "p95 / per-user p95"], rows,
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
        "HNSW index with the condition (iterative scan) and counts keyword IDF over the same owners. A user in no "
        "organization gets the per-user filter itself.")


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
