"""The Postgres vector store: pgvector on the same database as everything else (e.g. Neon).

One table per embedding space (named like the Qdrant collection: model and dimension), made
by `ensure_collection` rather than a migration, like a Qdrant collection. Per chunk:
- `dense vector(d)` in an HNSW index (cosine);
- `sparse sparsevec`: the same BM25 document weights the Qdrant adapters store
  (storage/sparse.py), and `terms int[]` (its indices, GIN-indexed) to find candidates;
- the payload as columns, metadata as jsonb.
Beside it, a table of per-owner document frequencies kept exact by triggers
(storage/pgvector_term_counts.py).

Scoring matches the Edge adapter: keyword scores are the dot product of the chunk's BM25
weights with the query terms weighted by IDF, the IDF taken over the chunks of the owners
the caller may read only (Qdrant's formula, `ln((N - n + 0.5) / (n + 0.5) + 1)`, N and n read from the
document frequency table);
hybrid fuses the dense and keyword candidate lists (same depth) with reciprocal rank fusion,
same k, ranks counted from 0 as Qdrant does. Every search is one SQL statement.

The filter comes from `sql_filter` (storage/filters.py), the SQL form of the one access filter.
Driver or server failures become `ServiceUnavailable` (HTTP 503); `healthy()` never raises.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from rag_service.config import Settings
from rag_service.errors import ServiceUnavailable
from rag_service.storage.filters import sql_filter
from rag_service.storage.pgvector_term_counts import CHUNK_COUNT_TERM, ensure_term_counts
from rag_service.storage.vectors import (
    COLLECTION_ID_KEY,
    RRF_K,
    ChunkFilter,
    ChunkHit,
    ChunkPoint,
    QueryVectors,
    SearchMode,
    SparseVector,
    prefetch_limit,
)

# sparsevec's largest dimension. BM25 token ids are 31-bit hashes, so they are folded into
# [1, SPARSE_DIMENSION] (sparsevec indices start at 1); a fold collision is as unlikely as
# a hash collision among a corpus' terms (~1e5 terms in 1e9 slots).
SPARSE_DIMENSION = 1_000_000_000
UPSERT_BATCH = 256
# HNSW candidates per scan; with iterative scans (pgvector >= 0.8) a filtered search keeps
# walking the graph until it has enough matches of the user's filter. `relaxed_order` (results
# may come slightly out of order; the statement re-sorts them by score) cost about half of
# `strict_order` at 20k chunks / 10 users (bench/search_latency.py --pgvector).
HNSW_EF_SEARCH = 100

P = ParamSpec("P")
T = TypeVar("T")


def _unavailable_on_failure(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Map "Postgres is unreachable / failing / too busy" to ServiceUnavailable.

    Programming errors (bad SQL, wrong types) propagate unchanged: they are bugs.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise ServiceUnavailable("the vector database is unreachable") from exc
        except psycopg.errors.QueryCanceled as exc:
            raise ServiceUnavailable("the vector database timed out") from exc

    return wrapper


def sparse_terms(vector: SparseVector) -> dict[int, float]:
    """Folded 1-based term -> weight; weights of folded-together terms add up."""
    terms: dict[int, float] = {}
    for index, value in zip(vector.indices, vector.values):
        term = index % SPARSE_DIMENSION + 1
        terms[term] = terms.get(term, 0.0) + value
    return terms


def sparsevec_literal(terms: dict[int, float]) -> str:
    body = ",".join(f"{term}:{value!r}" for term, value in sorted(terms.items()))
    return f"{{{body}}}/{SPARSE_DIMENSION}"


def vector_literal(values: list[float]) -> str:
    return "[" + ",".join(repr(float(v)) for v in values) + "]"


def postgres_conninfo(url: str) -> str:
    """A libpq URL from a SQLAlchemy-style one (postgresql+psycopg://...)."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


class PgVectorStore:
    """All users' chunks in one table, partitioned by the owner (column `user_id`)."""

    # Many replicas share the database: ingestion claims are stale only after their lease.
    single_process = False

    # The bounds default to Settings' (PGVECTOR_POOL_MAX_SIZE, ...); storage/factory.py passes
    # the configured ones.
    def __init__(self, url: str, collection: str, dimension: int, *,
                 pool_max_size: int = Settings.model_fields["pgvector_pool_max_size"].default,
                 timeout: float = Settings.model_fields["pgvector_pool_timeout_seconds"].default,
                 statement_timeout_ms: int = Settings.model_fields["pgvector_statement_timeout_ms"].default) -> None:
        self.collection = collection
        self._statement_timeout_ms = int(statement_timeout_ms)
        self._timeout = timeout
        self.dimension = dimension
        self._conninfo = postgres_conninfo(url)
        self._pool_max_size = pool_max_size
        self._pool: AsyncConnectionPool | None = None
        digest = hashlib.sha1(collection.encode()).hexdigest()[:12]
        self._table = sql.Identifier(collection)
        # Index names stay under Postgres' 63-byte identifier limit whatever the table name.
        self._index = {part: sql.Identifier(f"ix_{digest}_{part}")
                       for part in ("dense", "terms", "user", "collection")}
        self._lock_key = int(digest[:15], 16)
        self._term_counts = sql.Identifier(f"bm25_counts_{digest}")
        self._term_counts_function = sql.Identifier(f"bm25_counts_{digest}_apply")

    # Read-only: the chunk table, its BM25 count table and the connection string (for checks and tools).
    @property
    def conninfo(self) -> str:
        return self._conninfo

    @property
    def table(self) -> sql.Identifier:
        return self._table

    @property
    def term_counts_table(self) -> sql.Identifier:
        return self._term_counts

    async def _configure(self, connection: psycopg.AsyncConnection) -> None:
        await connection.execute(
            f"SET hnsw.ef_search = {HNSW_EF_SEARCH}; SET hnsw.iterative_scan = relaxed_order; "
            f"SET statement_timeout = {self._statement_timeout_ms}"
        )
        await connection.commit()

    async def _connections(self) -> AsyncConnectionPool:
        if self._pool is None:
            pool = AsyncConnectionPool(
                self._conninfo, min_size=1, max_size=self._pool_max_size, timeout=self._timeout,
                configure=self._configure, open=False, name=f"pgvector-{self.collection}",
            )
            await pool.open(wait=False)
            self._pool = pool
        return self._pool

    @_unavailable_on_failure
    async def ensure_collection(self) -> None:
        pool = await self._connections()
        async with pool.connection() as conn:
            async with conn.transaction():
                # Replicas starting together: one creates, the others wait and find it made.
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
                await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                await conn.execute(sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {table} ("
                    " id uuid PRIMARY KEY,"
                    " user_id text NOT NULL,"
                    " document_id text NOT NULL,"
                    " chunk_index integer NOT NULL,"
                    " text text NOT NULL,"
                    " title text NOT NULL,"
                    " start_offset integer NOT NULL,"
                    " end_offset integer NOT NULL,"
                    " metadata jsonb NOT NULL,"
                    " generation integer NOT NULL DEFAULT 0,"
                    " collection_id text,"
                    " dense vector({dimension}) NOT NULL,"
                    " sparse sparsevec({sparse_dimension}) NOT NULL,"
                    " terms integer[] NOT NULL)"
                ).format(table=self._table, dimension=sql.Literal(self.dimension),
                         sparse_dimension=sql.Literal(SPARSE_DIMENSION)))
                # Tables made before ingestion claims: their rows count as generation 0.
                await conn.execute(sql.SQL(
                    "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS generation integer NOT NULL DEFAULT 0"
                ).format(table=self._table))
                # Tables made before collections: their rows are in their owner's default collection.
                await conn.execute(sql.SQL("ALTER TABLE {table} ADD COLUMN IF NOT EXISTS collection_id text")
                                   .format(table=self._table))
                await conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} (user_id, document_id)")
                                   .format(name=self._index["user"], table=self._table))
                await conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} (user_id, collection_id)")
                                   .format(name=self._index["collection"], table=self._table))
                await conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {name} ON {table} USING gin (terms)")
                                   .format(name=self._index["terms"], table=self._table))
                await conn.execute(sql.SQL(
                    "CREATE INDEX IF NOT EXISTS {name} ON {table} USING hnsw (dense vector_cosine_ops)"
                ).format(name=self._index["dense"], table=self._table))
                await ensure_term_counts(conn, self._table, self._term_counts, self._term_counts_function)

    @_unavailable_on_failure
    async def upsert(self, points: list[ChunkPoint]) -> None:
        if not points:
            return
        # One statement per batch (not one per row): the term-count triggers run once per
        # statement. A statement may not update one row twice, so the last point of an id wins.
        statement = sql.SQL(
            "INSERT INTO {table} (id, user_id, document_id, chunk_index, text, title, start_offset, end_offset,"
            " metadata, generation, collection_id, dense, sparse, terms)"
            " SELECT id, user_id, document_id, chunk_index, text, title, start_offset, end_offset,"
            " metadata::jsonb, generation, collection_id, dense::vector, sparse::sparsevec, terms::integer[]"
            " FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::integer[], %s::text[], %s::text[],"
            " %s::integer[], %s::integer[], %s::text[], %s::integer[], %s::text[], %s::text[], %s::text[], %s::text[])"
            " AS batch(id, user_id, document_id, chunk_index, text, title, start_offset, end_offset,"
            " metadata, generation, collection_id, dense, sparse, terms)"
            " ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, document_id = excluded.document_id,"
            " collection_id = excluded.collection_id,"
            " chunk_index = excluded.chunk_index, text = excluded.text, title = excluded.title,"
            " start_offset = excluded.start_offset, end_offset = excluded.end_offset,"
            " metadata = excluded.metadata, generation = excluded.generation, dense = excluded.dense,"
            " sparse = excluded.sparse, terms = excluded.terms"
        ).format(table=self._table)
        # Formatting thousands of floats is CPU work: off the event loop.
        batches = await asyncio.to_thread(self._batches, points)
        pool = await self._connections()
        # One transaction: a document's chunks are stored all together or not at all.
        async with pool.connection() as conn, conn.transaction():
            for columns in batches:
                await conn.execute(statement, columns)

    @classmethod
    def _batches(cls, points: list[ChunkPoint]) -> list[list[list[Any]]]:
        """Column lists of at most UPSERT_BATCH rows each, one row per point id."""
        latest = list({uuid.UUID(point.id): point for point in points}.values())
        rows = [cls._row(point) for point in latest]
        return [[list(column) for column in zip(*rows[start : start + UPSERT_BATCH])]
                for start in range(0, len(rows), UPSERT_BATCH)]

    @staticmethod
    def _row(point: ChunkPoint) -> tuple[Any, ...]:
        terms = sparse_terms(point.sparse)
        return (point.id, point.owner, point.document_id, point.chunk_index, point.text, point.title,
                point.start, point.end, json.dumps(point.metadata), point.generation,
                point.payload().get(COLLECTION_ID_KEY), vector_literal(point.dense),
                sparsevec_literal(terms), "{" + ",".join(map(str, sorted(terms))) + "}")

    @_unavailable_on_failure
    async def search(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode = "hybrid",
        dense_score_threshold: float | None = None,
    ) -> list[ChunkHit]:
        if mode not in ("hybrid", "dense", "keyword"):
            raise ValueError(f"unknown search mode {mode!r}")
        query_terms = sorted(sparse_terms(query.sparse))
        if limit <= 0 or (mode == "keyword" and not query_terms):
            return []
        condition, params = sql_filter(where)
        params.update(
            dense=vector_literal(query.dense), query_terms=query_terms, threshold=dense_score_threshold,
            limit=limit, depth=limit if mode != "hybrid" else prefetch_limit(limit), rrf_k=RRF_K,
        )
        statement = self._search_sql(mode, bool(query_terms), sql.SQL(condition))
        pool = await self._connections()
        async with pool.connection() as conn:
            rows = await (await conn.execute(statement, params)).fetchall()
        return [
            ChunkHit(id=str(row[0]), score=float(row[1]), document_id=row[2], chunk_index=row[3], text=row[4],
                     title=row[5], start=row[6], end=row[7], metadata=row[8] or {})
            for row in rows
        ]

    def _search_sql(self, mode: SearchMode, has_terms: bool, condition: sql.Composable) -> sql.Composed:
        """One statement: ranked candidate lists as CTEs, fused (hybrid) or returned as they are."""

        def compose(text: str) -> sql.Composed:
            return sql.SQL(text).format(table=self._table, condition=condition,
                                        dimension=sql.Literal(SPARSE_DIMENSION))

        dense = compose(
            "dense_hits AS ("
            " SELECT id, score, row_number() OVER (ORDER BY score DESC, id) - 1 AS rank FROM ("
            "  SELECT id, 1 - (dense <=> %(dense)s::vector) AS score FROM {table} WHERE {condition}"
            "  ORDER BY dense <=> %(dense)s::vector LIMIT %(depth)s) nearest"
            " WHERE %(threshold)s::float8 IS NULL OR score >= %(threshold)s::float8)"
        )
        # IDF over the chunks of the owners the caller may read only, as the Edge adapter
        # does: other tenants' documents never shape a caller's keyword scores.
        keyword = self._frequencies_sql() + compose(
            " weighted_query AS ("
            "  SELECT format('{{%%s}}/{dimension}', string_agg(format('%%s:%%s', term,"
            "   ln((corpus.size - chunks + 0.5) / (chunks + 0.5) + 1)), ',' ORDER BY term))::sparsevec AS vector"
            "  FROM frequencies, corpus),"
            " keyword_hits AS ("
            "  SELECT id, score, row_number() OVER (ORDER BY score DESC, id) - 1 AS rank FROM ("
            "   SELECT id, -(sparse <#> weighted_query.vector) AS score FROM {table}, weighted_query"
            "   WHERE {condition} AND terms && %(query_terms)s::integer[]"
            "   ORDER BY score DESC, id LIMIT %(depth)s) matching)"
        )
        if mode == "dense":
            ctes, ranked = [dense], "SELECT id, score FROM dense_hits"
        elif mode == "keyword":
            ctes, ranked = [keyword], "SELECT id, score FROM keyword_hits"
        else:
            ctes = [dense, keyword] if has_terms else [dense]
            lists = "SELECT id, rank FROM dense_hits" + (" UNION ALL SELECT id, rank FROM keyword_hits" if has_terms else "")
            ranked = f"SELECT id, sum(1.0 / (%(rrf_k)s + rank))::float8 AS score FROM ({lists}) lists GROUP BY id"
        final = compose(
            "ranked AS (" + ranked + " ORDER BY score DESC, id LIMIT %(limit)s)"
            " SELECT c.id, ranked.score, c.document_id, c.chunk_index, c.text, c.title, c.start_offset,"
            " c.end_offset, c.metadata FROM ranked JOIN {table} c ON c.id = ranked.id"
            " ORDER BY ranked.score DESC, c.id"
        )
        return sql.SQL("WITH ") + sql.SQL(", ").join([*ctes, final])

    def _frequencies_sql(self) -> sql.Composed:
        """CTEs `corpus` (size: the chunk count N of the owners the caller may read) and
        `frequencies` (term, chunks: how many of those chunks hold each query term), summed
        over those owners' rows of the term-count table."""
        return sql.SQL(
            "corpus AS (SELECT coalesce((SELECT sum(chunks) FROM {counts}"
            "  WHERE user_id = ANY(%(f_owners)s::text[]) AND term = {chunk_count_term}), 0)::float8 AS size),"
            " frequencies AS ("
            "  SELECT query.term, coalesce(sum(counted.chunks), 0)::float8 AS chunks"
            "  FROM unnest(%(query_terms)s::integer[]) AS query(term)"
            "  LEFT JOIN {counts} counted ON counted.user_id = ANY(%(f_owners)s::text[]) AND counted.term = query.term"
            "  GROUP BY query.term),"
        ).format(counts=self._term_counts, chunk_count_term=sql.Literal(CHUNK_COUNT_TERM))

    @_unavailable_on_failure
    async def delete(self, where: ChunkFilter) -> None:
        condition, params = sql_filter(where)
        pool = await self._connections()
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("DELETE FROM {table} WHERE {condition}")
                               .format(table=self._table, condition=sql.SQL(condition)), params)

    @_unavailable_on_failure
    async def count(self, where: ChunkFilter) -> int:
        condition, params = sql_filter(where)
        pool = await self._connections()
        async with pool.connection() as conn:
            row = await (await conn.execute(sql.SQL("SELECT count(*) FROM {table} WHERE {condition}")
                                            .format(table=self._table, condition=sql.SQL(condition)), params)).fetchone()
        return int(row[0]) if row else 0

    async def healthy(self) -> bool:
        try:
            pool = await self._connections()
            async with pool.connection(timeout=min(self._timeout, 5)) as conn:
                await conn.execute(sql.SQL("SELECT 1 FROM {table} LIMIT 1").format(table=self._table))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
