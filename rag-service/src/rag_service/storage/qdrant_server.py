"""The scale-out vector store: a Qdrant server or cluster through `AsyncQdrantClient`.

Same collection layout and queries as the Edge adapter (named vectors "dense" and
"bm25" with the IDF modifier, tenant index on `user_id`, RRF with the same k and
prefetch depth), so both rank alike.

Failures become the API's 503s, after retries where they are safe (storage/qdrant_failures.py).
Every request the adapter sends is harmless to repeat, except creating the collection (a
repeat answers 409): reads, upserts of fixed point ids, deletes by filter, payload index
creation. (A repeated upsert landing after a concurrent delete of its document is what a
slow one does too: the claim protocol, documents/service.py, removes such points.)
`healthy()` never raises.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TypeVar

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from rag_service.core.retry import RetryPolicy
from rag_service.storage.filters import AnyOf, Between, Condition, Missing, OneOf, filter_spec
from rag_service.storage.qdrant_failures import (
    QDRANT_RETRIES,
    REPEATABLE,
    SENT_ONCE,
    VectorStoreUnreadable,
    unavailable_on_failure,
)
from rag_service.storage.vectors import (
    COLLECTION_ID_KEY,
    DENSE,
    DOCUMENT_ID_KEY,
    OWNER_KEY,
    RRF_K,
    SPARSE,
    ChunkFilter,
    ChunkHit,
    ChunkPoint,
    QueryVectors,
    SearchMode,
    SparseVector,
    prefetch_limit,
)

UPSERT_BATCH = 256

T = TypeVar("T")


def server_filter(where: ChunkFilter) -> models.Filter:
    """`ChunkFilter` -> Qdrant filter (conditions from `filters.filter_spec`)."""
    spec = filter_spec(where)
    return models.Filter(must=[_server_condition(c) for c in spec.must],
                         must_not=[_server_condition(c) for c in spec.must_not] or None)


def _server_condition(condition: Condition) -> models.Condition:
    if isinstance(condition, AnyOf):
        return models.Filter(should=[_server_condition(c) for c in condition.conditions])
    if isinstance(condition, OneOf):
        return models.FieldCondition(key=condition.key, match=models.MatchAny(any=list(condition.values)))
    if isinstance(condition, Between):
        return models.FieldCondition(key=condition.key, range=models.Range(gte=condition.gte, lte=condition.lte))
    if isinstance(condition, Missing):
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=condition.key))
    return models.FieldCondition(key=condition.key, match=models.MatchValue(value=condition.value))


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


class ServerVectorStore:
    """All users' chunks in one server collection, partitioned by the owner (`user_id`) payload."""

    # Many replicas share the server: ingestion claims are stale only after their lease.
    single_process = False

    def __init__(self, client: AsyncQdrantClient, collection: str, dimension: int, *,
                 retry_policy: RetryPolicy = QDRANT_RETRIES) -> None:
        self.client = client
        self.collection = collection
        self.dimension = dimension
        self.retry_policy = retry_policy

    async def _send(self, request: Callable[[], Awaitable[T]], *, repeatable: bool = True) -> T:
        """Await `request()` with retries (see the module docstring for which)."""

        async def attempt() -> T:
            try:
                return await request()
            except (json.JSONDecodeError, AssertionError) as exc:
                # qdrant-client parses 2xx bodies itself and asserts they hold a `result`.
                raise VectorStoreUnreadable(type(exc).__name__) from exc

        return await self.retry_policy.retrying(REPEATABLE if repeatable else SENT_ONCE)(attempt)

    @unavailable_on_failure
    async def ensure_collection(self) -> None:
        try:
            await self._create_collection_and_indexes()
        except UnexpectedResponse as exc:
            if exc.status_code != 404:
                raise
            # The collection was deleted between the existence check and its indexes: once more.
            await self._create_collection_and_indexes()

    async def _create_collection_and_indexes(self) -> None:
        if not await self._send(lambda: self.client.collection_exists(self.collection)):
            try:
                await self._send(lambda: self.client.create_collection(
                    self.collection,
                    vectors_config={DENSE: models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)},
                    sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                ), repeatable=False)
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # another replica created it first
                    raise
        # Creating an existing index is a no-op, so every replica can run this at start-up.
        await self._send(lambda: self.client.create_payload_index(
            self.collection,
            OWNER_KEY,
            field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            wait=True,
        ))
        for key in (DOCUMENT_ID_KEY, COLLECTION_ID_KEY):
            await self._send(lambda key=key: self.client.create_payload_index(
                self.collection, key, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
            ))

    @unavailable_on_failure
    async def upsert(self, points: list[ChunkPoint]) -> None:
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                models.PointStruct(
                    id=p.id,
                    vector={DENSE: list(p.dense), SPARSE: _sparse(p.sparse)},
                    payload=p.payload(),
                )
                for p in points[start : start + UPSERT_BATCH]
            ]
            await self._send(lambda batch=batch: self.client.upsert(self.collection, points=batch, wait=True))

    @unavailable_on_failure
    async def search(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode = "hybrid",
        dense_score_threshold: float | None = None,
    ) -> list[ChunkHit]:
        if limit <= 0:
            return []
        scope = server_filter(where)
        has_terms = bool(query.sparse.indices)
        # IDF from this user's chunks only, as in the Edge adapter.
        keyword_params = models.SearchParams(idf=models.IdfCorpusParams(corpus=server_filter(where.access_only())))
        common = {"collection_name": self.collection, "limit": limit, "query_filter": scope, "with_payload": True}
        if mode == "dense":
            response = await self._send(lambda: self.client.query_points(
                query=list(query.dense), using=DENSE, score_threshold=dense_score_threshold, **common
            ))
        elif mode == "keyword":
            if not has_terms:
                return []
            response = await self._send(lambda: self.client.query_points(
                query=_sparse(query.sparse), using=SPARSE, search_params=keyword_params, **common
            ))
        elif mode == "hybrid":
            depth = prefetch_limit(limit)
            prefetch = [
                models.Prefetch(
                    query=list(query.dense), using=DENSE, filter=scope, limit=depth, score_threshold=dense_score_threshold
                )
            ]
            if has_terms:
                prefetch.append(
                    models.Prefetch(
                        query=_sparse(query.sparse), using=SPARSE, filter=scope, limit=depth, params=keyword_params
                    )
                )
            response = await self._send(lambda: self.client.query_points(
                prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)), **common
            ))
        else:
            raise ValueError(f"unknown search mode {mode!r}")
        try:
            return [ChunkHit.from_payload(p.id, p.score, p.payload or {}) for p in response.points]
        except (KeyError, TypeError, ValueError) as exc:  # a point without our payload
            raise VectorStoreUnreadable(type(exc).__name__) from exc

    @unavailable_on_failure
    async def delete(self, where: ChunkFilter) -> None:
        selector = models.FilterSelector(filter=server_filter(where))
        await self._send(lambda: self.client.delete(self.collection, points_selector=selector, wait=True))

    @unavailable_on_failure
    async def count(self, where: ChunkFilter) -> int:
        scope = server_filter(where)
        result = await self._send(lambda: self.client.count(self.collection, count_filter=scope, exact=True))
        return result.count

    async def healthy(self) -> bool:
        try:
            return await self.client.collection_exists(self.collection)
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.close()
