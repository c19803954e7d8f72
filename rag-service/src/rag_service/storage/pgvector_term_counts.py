"""Per-user BM25 document frequencies for the pgvector store, kept by triggers.

A keyword score needs, per query term, how many of the searching user's chunks contain
the term, and how many chunks the user has (N). Counting them at query time costs a GIN
index scan per term over every tenant's matching chunks: most of a hybrid search at 100k
chunks. Instead one table per chunk table holds `(user_id, term, chunks)`, term 0 holding N
(BM25 terms are folded into 1..SPARSE_DIMENSION, so 0 is free), and statement-level
triggers on the chunk table keep it exact in the same transaction as every insert, update,
delete and truncate, whoever writes: this adapter's upserts and deletes (generation
cleanups included), an older replica during a rolling upgrade, or a manual fix.

Exact under concurrent writers: each trigger applies its statement's net changes in one
INSERT ... ON CONFLICT DO UPDATE (an atomic increment) in (user_id, term) order, always
including the user's term-0 row. So the (user, 0) row lock is taken before any other row
of that user and held until commit: writers of one user apply their counts one after
the other (the rest of their statements, HNSW inserts included, run concurrently), and
no two writers can wait on each other's count rows. Rows that reach 0 are removed.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

# The row of a user's chunk count (N); BM25 terms are >= 1.
CHUNK_COUNT_TERM = 0
TRIGGERS = {
    "bm25_counts_insert": "AFTER INSERT ON {table} REFERENCING NEW TABLE AS added_rows",
    "bm25_counts_update": "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS removed_rows NEW TABLE AS added_rows",
    "bm25_counts_delete": "AFTER DELETE ON {table} REFERENCING OLD TABLE AS removed_rows",
    "bm25_counts_truncate": "AFTER TRUNCATE ON {table}",
}

# The net change of one statement, from its transition tables (named as in TRIGGERS).
_CHANGES = {
    "INSERT": "SELECT user_id, terms, 1 AS sign FROM added_rows",
    "UPDATE": "SELECT user_id, terms, 1 AS sign FROM added_rows"
              " UNION ALL SELECT user_id, terms, -1 AS sign FROM removed_rows",
    "DELETE": "SELECT user_id, terms, -1 AS sign FROM removed_rows",
}

_APPLY = """
        WITH changes AS ({changes}),
        deltas AS (
            SELECT user_id, term, sum(sign) AS delta FROM (
                SELECT user_id, {chunk_count_term} AS term, sign FROM changes
                UNION ALL SELECT user_id, unnest(terms) AS term, sign FROM changes) per_term
            GROUP BY user_id, term
            HAVING sum(sign) <> 0 OR term = {chunk_count_term}),
        applied AS (
            INSERT INTO {counts} AS counted (user_id, term, chunks)
            SELECT user_id, term, delta FROM deltas ORDER BY user_id, term
            ON CONFLICT (user_id, term) DO UPDATE SET chunks = counted.chunks + excluded.chunks
            RETURNING user_id, term, chunks)
        SELECT coalesce(array_agg(user_id), '{{}}'), coalesce(array_agg(term), '{{}}')
            INTO emptied_users, emptied_terms FROM applied WHERE chunks = 0;
        DELETE FROM {counts} AS counted USING unnest(emptied_users, emptied_terms) AS emptied(user_id, term)
            WHERE counted.user_id = emptied.user_id AND counted.term = emptied.term AND counted.chunks = 0;"""

_FUNCTION = """
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$
DECLARE
    emptied_users text[];
    emptied_terms integer[];
BEGIN
    IF TG_OP = 'INSERT' THEN{insert}
    ELSIF TG_OP = 'UPDATE' THEN{update}
    ELSIF TG_OP = 'DELETE' THEN{delete}
    ELSE  -- TRUNCATE
        DELETE FROM {counts};
    END IF;
    RETURN NULL;
END
$body$"""

# Every (user, term) count from the chunk rows themselves: the backfill, and what tests
# compare the table with.
RECOUNT = """
    SELECT user_id, {chunk_count_term} AS term, count(*) AS chunks FROM {table} GROUP BY user_id
    UNION ALL SELECT user_id, term, count(*) FROM {table}, unnest(terms) AS term GROUP BY user_id, term"""


def recount_sql(table: sql.Identifier) -> sql.Composed:
    return sql.SQL(RECOUNT).format(table=table, chunk_count_term=sql.Literal(CHUNK_COUNT_TERM))


async def ensure_term_counts(conn: psycopg.AsyncConnection, table: sql.Identifier, counts: sql.Identifier,
                             function: sql.Identifier) -> None:
    """Create the counts table, its trigger function and the triggers on `table` (idempotent).

    Run inside ensure_collection's transaction, under its advisory lock. When a trigger was
    missing (a table made before counts existed, or a fresh one), the counts are rebuilt
    from the chunk rows: CREATE TRIGGER locks out writers until this transaction commits,
    so no write can slip between the recount and the triggers.
    """
    await conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {counts} (user_id text NOT NULL, term integer NOT NULL,"
        " chunks bigint NOT NULL, PRIMARY KEY (user_id, term))"
    ).format(counts=counts))
    apply = {op: sql.SQL(_APPLY).format(changes=sql.SQL(changes), counts=counts,
                                        chunk_count_term=sql.Literal(CHUNK_COUNT_TERM))
             for op, changes in _CHANGES.items()}
    await conn.execute(sql.SQL(_FUNCTION).format(function=function, counts=counts, insert=apply["INSERT"],
                                                 update=apply["UPDATE"], delete=apply["DELETE"]))
    table_name = table.as_string(conn)
    rows = await (await conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal", (table_name,)
    )).fetchall()
    missing = set(TRIGGERS) - {row[0] for row in rows}
    if not missing:
        return
    for name in sorted(missing):
        await conn.execute(sql.SQL("CREATE TRIGGER {name} " + TRIGGERS[name] + " FOR EACH STATEMENT"
                                   " EXECUTE FUNCTION {function}()")
                           .format(name=sql.Identifier(name), table=table, function=function))
    await conn.execute(sql.SQL("DELETE FROM {counts}").format(counts=counts))
    await conn.execute(sql.SQL("INSERT INTO {counts} (user_id, term, chunks) ").format(counts=counts)
                       + recount_sql(table))
