"""The scale-out vector store: a Qdrant server or cluster through `AsyncQdrantClient`.

Same collection layout and queries as the Edge adapter (named vectors "dense" and
"bm25" with the IDF modifier, tenant index on `user_id`, RRF with the same k and
prefetch depth), so both rank alike. Connection failures and timeouts become
`ServiceUnavailable` (HTTP 503); `healthy()` never raises.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import httpx
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from rag_service.errors import ServiceUnavailable
from rag_service.storage.filters import AnyOf, Between, Condition, OneOf, filter_spec
from rag_service.storage.qdrant_edge import DENSE, RRF_K, SPARSE, prefetch_limit
from rag_service.storage.vectors import (
    DOCUMENT_ID_KEY,
    USER_ID_KEY,
    ChunkFilter,
    ChunkHit,
    ChunkPoint,
    QueryVectors,
    SearchMode,
    SparseVector,
)

UPSERT_BATCH = 256

P = ParamSpec("P")
T = TypeVar("T")


def _unavailable_on_failure(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Map "Qdrant is unreachable / overloaded / failing" to ServiceUnavailable.

    Other 4xx responses are bugs in our requests and propagate unchanged.
    """

    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except (ResponseHandlingException, ResourceExhaustedResponse, httpx.TransportError, TimeoutError) as exc:
            raise ServiceUnavailable("the vector database is unreachable") from exc
        except UnexpectedResponse as exc:
            if exc.status_code is None or exc.status_code >= 500 or exc.status_code == 429:
                raise ServiceUnavailable(f"the vector database failed ({exc.status_code})") from exc
            raise

    return wrapper


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
    return models.FieldCondition(key=condition.key, match=models.MatchValue(value=condition.value))


def _sparse(vector: SparseVector) -> models.SparseVector:
    return models.SparseVector(indices=list(vector.indices), values=list(vector.values))


class ServerVectorStore:
    """All users' chunks in one server collection, partitioned by the `user_id` payload."""

    # Many replicas share the server: ingestion claims are stale only after their lease.
    single_process = False

    def __init__(self, client: AsyncQdrantClient, collection: str, dimension: int) -> None:
        self.client = client
        self.collection = collection
        self.dimension = dimension

    @_unavailable_on_failure
    async def ensure_collection(self) -> None:
        if not await self.client.collection_exists(self.collection):
            try:
                await self.client.create_collection(
                    self.collection,
                    vectors_config={DENSE: models.VectorParams(size=self.dimension, distance=models.Distance.COSINE)},
                    sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                )
            except UnexpectedResponse as exc:
                if exc.status_code != 409:  # another replica created it first
                    raise
        # Creating an existing index is a no-op, so every replica can run this at start-up.
        await self.client.create_payload_index(
            self.collection,
            USER_ID_KEY,
            field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
            wait=True,
        )
        await self.client.create_payload_index(
            self.collection, DOCUMENT_ID_KEY, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
        )

    @_unavailable_on_failure
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
            await self.client.upsert(self.collection, points=batch, wait=True)

    @_unavailable_on_failure
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
            response = await self.client.query_points(
                query=list(query.dense), using=DENSE, score_threshold=dense_score_threshold, **common
            )
        elif mode == "keyword":
            if not has_terms:
                return []
            response = await self.client.query_points(
                query=_sparse(query.sparse), using=SPARSE, search_params=keyword_params, **common
            )
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
            response = await self.client.query_points(
                prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)), **common
            )
        else:
            raise ValueError(f"unknown search mode {mode!r}")
        return [ChunkHit.from_payload(p.id, p.score, p.payload or {}) for p in response.points]

    @_unavailable_on_failure
    async def delete(self, where: ChunkFilter) -> None:
        await self.client.delete(
            self.collection, points_selector=models.FilterSelector(filter=server_filter(where)), wait=True
        )

    @_unavailable_on_failure
    async def count(self, where: ChunkFilter) -> int:
        result = await self.client.count(self.collection, count_filter=server_filter(where), exact=True)
        return result.count

    async def healthy(self) -> bool:
        try:
            return await self.client.collection_exists(self.collection)
        except Exception:
            return False

    async def close(self) -> None:
        await self.client.close()
