"""The pgvector store's keyword statistics as they were before the term-count table, kept
as the reference the table must reproduce: the user's chunk count N and each query term's
document frequency counted from the chunk rows at query time (a GIN index scan per term).
Used by tests/test_pgvector_term_counts.py (same results) and bench/search_latency.py
(`--pgvector-idf-baseline`: the time it took)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from rag_service.storage.pgvector import PgVectorStore, postgres_conninfo
from rag_service.storage.pgvector_term_counts import recount_sql


class QueryTimeIdfStore(PgVectorStore):
    """The same store and table, with the old `corpus` / `frequencies` CTEs (verbatim)."""

    def _frequencies_sql(self) -> sql.Composed:
        return sql.SQL(
            "corpus AS (SELECT count(*)::float8 AS size FROM {table} WHERE user_id = ANY(%(f_owners)s::text[])),"
            # Per query term, through the GIN index on terms: cheaper than unnesting the
            # arrays of every matching chunk.
            " frequencies AS MATERIALIZED ("
            "  SELECT term, (SELECT count(*) FROM {table}"
            "   WHERE user_id = ANY(%(f_owners)s::text[]) AND terms @> ARRAY[term])::float8 AS chunks"
            "  FROM unnest(%(query_terms)s::integer[]) AS term),"
        ).format(table=self._table)


async def stored_and_recounted(store: PgVectorStore, url: str) -> tuple[dict, dict]:
    """The term-count table's rows and the same counts recomputed from the chunk rows,
    each as {(user_id, term): chunks}."""
    async with await psycopg.AsyncConnection.connect(postgres_conninfo(url)) as conn:
        stored = await (await conn.execute(
            sql.SQL("SELECT user_id, term, chunks FROM {counts}").format(counts=store.term_counts_table)
        )).fetchall()
        recounted = await (await conn.execute(recount_sql(store.table))).fetchall()
    return ({(user, term): chunks for user, term, chunks in stored},
            {(user, term): chunks for user, term, chunks in recounted})
