"""pgvector's per-user BM25 document frequencies (storage/pgvector_term_counts.py), on the
real PostgreSQL 18 + pgvector server: the table always equals a recount of the chunk rows
(after concurrent upserts, updates, deletes and generation cleanups from several replicas,
a truncate, and on a table made before the counts existed), and searches rank and score
exactly as the old query-time counting did (tests/pgvector_reference.py)."""

from __future__ import annotations

import asyncio
import random
import uuid
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from pgvector_reference import QueryTimeIdfStore, stored_and_recounted
from rag_service.storage.pgvector import PgVectorStore, postgres_conninfo
from rag_service.storage.pgvector_term_counts import TRIGGERS
from rag_service.storage.access import Access, access_filter, document_points
from rag_service.storage.vectors import ChunkPoint
from vector_store_support import DIM, MODES, chunk, query, unit

pytestmark = pytest.mark.postgres

# Few words, so that every chunk shares terms with many others (contended count rows).
WORDS = ("kernel scheduler memory page disk socket packet router cache buffer thread signal pipe "
         "file inode mount driver device clock timer queue lock mutex process shell").split()
USERS = ("user-racer", "user-neighbour")


def text(rng: random.Random, words: tuple[str, ...] | list[str] = WORDS) -> str:
    return " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))


def document(rng: random.Random, user: str, name: str, chunks: int, generation: int = 0) -> list[ChunkPoint]:
    return [replace(chunk(user, name, i, text(rng), unit(rng.random(), rng.random(), 1)), generation=generation)
            for i in range(chunks)]


def new_collection(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def replicas(pgvector_url: str):
    """Three stores on one table, as three rag-service replicas would have."""
    collection = new_collection("counts")
    stores = [PgVectorStore(pgvector_url, collection=collection, dimension=DIM) for _ in range(3)]
    await asyncio.gather(*(store.ensure_collection() for store in stores))
    yield stores
    for store in stores:
        await store.close()


async def assert_counts_exact(store: PgVectorStore, url: str) -> dict:
    stored, recounted = await stored_and_recounted(store, url)
    assert stored == recounted
    return stored


async def test_counts_stay_exact_under_concurrent_writes_of_one_user(replicas, pgvector_url):
    """Each round runs one operation per document, all at once across three replicas:
    new generations, re-upserts of the same ids with other words, generation cleanups,
    whole-document deletes, and upserts carrying both users' chunks."""
    rng = random.Random(13)
    names = [f"doc-{i}" for i in range(10)]
    generation = dict.fromkeys(names, 0)
    for name in names:  # a starting corpus
        await replicas[0].upsert(document(rng, USERS[0], name, 20))

    for _ in range(6):
        operations = []
        for name in names:
            store = rng.choice(replicas)
            kind = rng.choice(["new generation", "same ids, other words", "cleanup", "delete", "both users"])
            if kind == "new generation":
                generation[name] += 1
                operations.append(store.upsert(document(rng, USERS[0], name, rng.randint(1, 40), generation[name])))
            elif kind == "same ids, other words":
                # uuid4 ids per call, so reuse this document's stored ids explicitly
                operations.append(rewrite_in_place(store, rng, name, generation[name]))
            elif kind == "cleanup":
                operations.append(store.delete(document_points(name, below=generation[name])))
            elif kind == "delete":
                operations.append(store.delete(access_filter(Access(USERS[0]), document_ids=[name])))
            else:
                operations.append(store.upsert(document(rng, USERS[0], name, 5, generation[name])
                                               + document(rng, USERS[1], f"{name}-n", 5)))
        await asyncio.gather(*operations)
        stored = await assert_counts_exact(replicas[0], pgvector_url)
        chunk_total = sum([await replicas[0].count(access_filter(Access(user))) for user in USERS])
        assert sum(stored.get((user, 0), 0) for user in USERS) == chunk_total


async def rewrite_in_place(store: PgVectorStore, rng: random.Random, name: str, generation: int) -> None:
    """Upsert new words under ids that already exist (the trigger's update path)."""
    async with await psycopg.AsyncConnection.connect(store.conninfo) as conn:
        rows = await (await conn.execute(
            sql.SQL("SELECT id FROM {table} WHERE user_id = %s AND document_id = %s").format(table=store.table),
            (USERS[0], name),
        )).fetchall()
    points = document(rng, USERS[0], name, len(rows), generation)
    await store.upsert([replace(point, id=str(row[0])) for point, row in zip(points, rows)])


async def test_repeated_ids_in_one_upsert_keep_the_last_point(replicas, pgvector_url):
    store = replicas[0]
    first = chunk(USERS[0], "doc", 0, "kernel scheduler", unit(1))
    last = replace(first, text="zebra crossing", sparse=query("zebra crossing", unit(1)).sparse)
    await store.upsert([first, replace(first, id=first.id.upper()), last])
    assert await store.count(access_filter(Access(USERS[0]))) == 1
    [hit] = await store.search(query("zebra", unit(1)), access_filter(Access(USERS[0])), limit=5, mode="keyword")
    assert hit.text == "zebra crossing"
    assert await store.search(query("kernel", unit(1)), access_filter(Access(USERS[0])), limit=5, mode="keyword") == []
    await assert_counts_exact(store, pgvector_url)


async def test_truncate_empties_the_counts(replicas, pgvector_url):
    store = replicas[0]
    await store.upsert(document(random.Random(1), USERS[0], "doc", 10))
    async with await psycopg.AsyncConnection.connect(pgvector_url) as conn:
        await conn.execute(sql.SQL("TRUNCATE {table}").format(table=store.table))
    assert await assert_counts_exact(store, pgvector_url) == {}


async def test_a_table_made_before_the_counts_gets_them_at_start_up(pgvector_url):
    """A replica of the new version starting on an older table (rows, no counts, no
    triggers) builds the counts from the rows; later writes keep them exact."""
    rng = random.Random(5)
    collection = new_collection("legacy")
    store = PgVectorStore(pgvector_url, collection=collection, dimension=DIM)
    try:
        await store.ensure_collection()
        await store.upsert(document(rng, USERS[0], "old", 30) + document(rng, USERS[1], "old", 7))
        async with await psycopg.AsyncConnection.connect(pgvector_url) as conn:  # back to the old schema
            for name in TRIGGERS:
                await conn.execute(sql.SQL("DROP TRIGGER {name} ON {table}")
                                   .format(name=sql.Identifier(name), table=store.table))
            await conn.execute(sql.SQL("DROP TABLE {counts}").format(counts=store.term_counts_table))
        await asyncio.gather(*(PgVectorStore(pgvector_url, collection=collection, dimension=DIM).ensure_collection()
                               for _ in range(3)))
        stored = await assert_counts_exact(store, pgvector_url)
        assert (stored[(USERS[0], 0)], stored[(USERS[1], 0)]) == (30, 7)
        await store.delete(access_filter(Access(USERS[0]), document_ids=["old"]))
        await store.upsert(document(rng, USERS[0], "new", 4))
        stored = await assert_counts_exact(store, pgvector_url)
        assert (stored[(USERS[0], 0)], stored[(USERS[1], 0)]) == (4, 7)
    finally:
        await store.close()


async def test_searches_score_exactly_as_counting_at_query_time(pgvector_url):
    """A seeded corpus (three users, one vocabulary with common and rare words, then
    deletes and rewrites), every mode: the same chunks in the same order with the same
    scores as the old statement that counted document frequencies per query."""
    rng = random.Random(29)
    vocabulary = [f"{stem}{suffix}" for stem in WORDS for suffix in ("", "ed", "ing", "er")]
    collection = new_collection("parity")
    store = PgVectorStore(pgvector_url, collection=collection, dimension=DIM)
    reference = QueryTimeIdfStore(pgvector_url, collection=collection, dimension=DIM)
    try:
        await store.ensure_collection()
        for user in ("user-a", "user-b", "user-c"):
            # Zipf-like word choice: a few words in most chunks, many in few.
            words = [vocabulary[min(int(rng.paretovariate(0.7)) - 1, len(vocabulary) - 1)] for _ in range(2000)]
            for d in range(6):
                await store.upsert([chunk(user, f"doc-{d}", i, text(rng, words), unit(rng.random(), rng.random(), 1))
                                    for i in range(rng.randint(10, 40))])
        await store.delete(access_filter(Access("user-a"), document_ids=["doc-0", "doc-3"]))
        await store.upsert(document(rng, "user-b", "doc-1", 15))  # same document name, new points
        queries = [query(" ".join(rng.sample(vocabulary, rng.randint(1, 4))), unit(rng.random(), 1, rng.random()))
                   for _ in range(40)]
        queries.append(query("kernel unheardofword", unit(1)))
        filters = [access_filter(Access(user)) for user in ("user-a", "user-b", "user-c")]
        filters.append(access_filter(Access("user-b"), document_ids=["doc-1", "doc-2"]))
        compared = 0
        for q in queries:
            for where in filters:
                for mode in MODES:
                    expected = await reference.search(q, where, limit=10, mode=mode)
                    actual = await store.search(q, where, limit=10, mode=mode)
                    assert [(h.id, h.score) for h in actual] == [(h.id, h.score) for h in expected], (mode, where)
                    compared += bool(expected)
        assert compared > len(queries) * len(filters) * 2  # most comparisons had results
    finally:
        await store.close()
        await reference.close()
