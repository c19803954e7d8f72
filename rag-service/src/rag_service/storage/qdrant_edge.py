"""The embedded vector store: a Qdrant Edge shard in a local directory.

Measured (bench/edge_gil.py, 20k points, 2 shared cores): qdrant-edge-py 0.9 holds the GIL
for the whole of every call (query, update, scroll, count). A 20k-point delete by filter
stalled the event loop ~220 ms whether it ran inline or in a worker thread; 1,000 searches
in a worker thread let the loop run only between searches (one ticker wake-up per search).
So a thread hop does not make a call cheaper for the loop; what helps is making each call
small:
- searches run in a worker thread: the event loop never runs one itself, so at 100k chunks
  per user (~100 ms a search) other requests get the loop between searches rather than
  behind them; counts (cheap) stay inline;
- writes run in a worker thread in small operations (UPSERT_BATCH points, DELETE_BATCH
  ids), so the loop gets the GIL back between them: the same 20k-point delete stalls the
  loop at most ~15-35 ms, a 20k upsert ~9 ms (was 30-80 ms with 512 points a call).
A shard has a single writer, so writes are serialized by an asyncio lock, and only one
rag-service process may open the directory (scale out with a Qdrant server instead).
The service runs this store in a child process by default (storage/edge_process.py,
QDRANT_EDGE_PROCESS), where holding the GIL stalls nothing else.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy
import qdrant_edge as qe

from rag_service.errors import ServiceUnavailable
from rag_service.storage.filters import AnyOf, Between, Condition, Missing, OneOf, filter_spec
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

# Points per Edge write operation. qdrant-edge-py 0.9 holds the GIL for the whole of every
# call (query, update, scroll), so a worker thread does not free the event loop during a
# call; it gets the GIL back only between calls. Small operations bound the stall
# (bench/edge_gil.py, docs/benchmarks.md).
UPSERT_BATCH = 128
DELETE_BATCH = 256


def edge_filter(where: ChunkFilter) -> qe.Filter:
    """`ChunkFilter` -> Edge filter (conditions from `filters.filter_spec`)."""
    spec = filter_spec(where)
    return qe.Filter(must=[_edge_condition(c) for c in spec.must],
                     must_not=[_edge_condition(c) for c in spec.must_not] or None)


def _edge_condition(condition: Condition) -> qe.Filter | qe.FieldCondition | qe.IsEmptyCondition:
    if isinstance(condition, Missing):
        return qe.IsEmptyCondition(key=condition.key)
    if isinstance(condition, AnyOf):
        return qe.Filter(should=[_edge_condition(c) for c in condition.conditions])
    if isinstance(condition, OneOf):
        return qe.FieldCondition(key=condition.key, match=qe.MatchAny(list(condition.values)))
    if isinstance(condition, Between):
        return qe.FieldCondition(key=condition.key, range=qe.RangeFloat(gte=condition.gte, lte=condition.lte))
    # qdrant-edge-py 0.9 reads a Python bool as the integer 1/0 here; numpy's bool is
    # extracted as a real boolean.
    value = numpy.bool_(condition.value) if isinstance(condition.value, bool) else condition.value
    return qe.FieldCondition(key=condition.key, match=qe.MatchValue(value))


def _sparse(vector: SparseVector) -> qe.SparseVector:
    return qe.SparseVector(indices=list(vector.indices), values=list(vector.values))


class EdgeVectorStore:
    """All users' chunks in one Edge shard at `path`, partitioned by the owner (`user_id`) payload."""

    # Only one process can open a shard, so an ingestion claim taken before this process
    # started cannot belong to a live run (start-up repair relies on it).
    single_process = True

    def __init__(self, path: Path | str, collection: str, dimension: int) -> None:
        self.path = Path(path)
        self.collection = collection
        self.dimension = dimension
        self._shard: qe.EdgeShard | None = None
        self._write_lock = asyncio.Lock()

    def _config(self) -> qe.EdgeConfig:
        return qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=self.dimension, distance=qe.Distance.Cosine)},
            # IDF is applied at query time, so BM25 weights follow the stored chunks.
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )

    def _open(self) -> qe.EdgeShard:
        if self._shard is None:
            config = self._config()
            try:
                if (self.path / "edge_config.json").exists():
                    # Passing the config checks it against the stored segments (dimension...).
                    shard = qe.EdgeShard.load(str(self.path), config)
                else:
                    self.path.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(self.path), config)
            except Exception as exc:  # qdrant_edge raises plain Exception (locked, corrupt, mismatched)
                raise ServiceUnavailable(f"cannot open the vector store at {self.path}: {exc}") from exc
            indexed = shard.info().payload_schema
            if OWNER_KEY not in indexed:
                # is_tenant: the shard keeps each owner's points together, so a filtered
                # search only touches the data of the owners the caller may read.
                shard.update(qe.UpdateOperation.create_field_index(OWNER_KEY, qe.KeywordIndexParams(is_tenant=True)))
            for key in (DOCUMENT_ID_KEY, COLLECTION_ID_KEY):
                if key not in indexed:
                    shard.update(qe.UpdateOperation.create_field_index(key, qe.PayloadSchemaType.Keyword))
            self._shard = shard
        return self._shard

    async def ensure_collection(self) -> None:
        async with self._write_lock:
            await asyncio.to_thread(self._open)

    async def upsert(self, points: list[ChunkPoint]) -> None:
        if not points:
            return
        async with self._write_lock:
            await asyncio.to_thread(self._upsert_sync, points)

    def _upsert_sync(self, points: list[ChunkPoint]) -> None:
        shard = self._open()
        for start in range(0, len(points), UPSERT_BATCH):
            batch = [
                qe.Point(
                    id=p.id,
                    vector={DENSE: list(p.dense), SPARSE: _sparse(p.sparse)},
                    payload=p.payload(),
                )
                for p in points[start : start + UPSERT_BATCH]
            ]
            shard.update(qe.UpdateOperation.upsert_points(batch))

    async def search(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode = "hybrid",
        dense_score_threshold: float | None = None,
    ) -> list[ChunkHit]:
        request = self.build_query(query, where, limit, mode, dense_score_threshold)
        if request is None:
            return []
        # In a worker thread: the event loop never runs a search itself (see the module docstring).
        points = await asyncio.to_thread(self._open().query, request)
        return [ChunkHit.from_payload(p.id, p.score, p.payload or {}) for p in points]

    def build_query(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode,
        dense_score_threshold: float | None,
    ) -> qe.QueryRequest | None:
        """The Edge query for a search, or None when it cannot match anything."""
        if limit <= 0:
            return None
        scope = edge_filter(where)
        has_terms = bool(query.sparse.indices)
        dense = qe.Query.Nearest(list(query.dense), using=DENSE)
        keyword = qe.Query.Nearest(_sparse(query.sparse), using=SPARSE)
        # IDF from the chunks the caller may read only: other tenants' documents never
        # shape a caller's keyword scores (no cross-tenant statistics leak through rankings).
        keyword_params = qe.SearchParams(idf=qe.IdfParams(corpus=edge_filter(where.access_only())))
        if mode == "dense":
            return qe.QueryRequest(
                limit=limit, query=dense, filter=scope, score_threshold=dense_score_threshold, with_payload=True
            )
        if mode == "keyword":
            if not has_terms:
                return None
            return qe.QueryRequest(limit=limit, query=keyword, filter=scope, params=keyword_params, with_payload=True)
        if mode != "hybrid":
            raise ValueError(f"unknown search mode {mode!r}")
        depth = prefetch_limit(limit)
        prefetches = [qe.Prefetch(limit=depth, query=dense, filter=scope, score_threshold=dense_score_threshold)]
        if has_terms:
            prefetches.append(qe.Prefetch(limit=depth, query=keyword, filter=scope, params=keyword_params))
        return qe.QueryRequest(
            limit=limit, prefetches=prefetches, query=qe.Fusion.Rrf(k=RRF_K), filter=scope, with_payload=True
        )

    async def delete(self, where: ChunkFilter) -> None:
        async with self._write_lock:
            await asyncio.to_thread(self._delete_sync, edge_filter(where))

    def _delete_sync(self, where: qe.Filter) -> None:
        """Delete in pages of DELETE_BATCH ids: Edge holds the GIL for a whole operation,
        and the event loop only gets the GIL back between operations."""
        shard = self._open()
        offset = None
        while True:
            page = qe.ScrollRequest(offset=offset, limit=DELETE_BATCH, filter=where, with_payload=False, with_vector=False)
            records, offset = shard.scroll(page)
            if records:
                shard.update(qe.UpdateOperation.delete_points([record.id for record in records]))
            if offset is None:
                return

    async def count(self, where: ChunkFilter) -> int:
        return self._open().count(qe.CountRequest(filter=edge_filter(where), exact=True))

    async def optimize(self) -> bool:
        """Build HNSW indexes and merge segments. Offline use only (a `reindex` command).

        Not part of `VectorStore`, and never called by the service: Edge has no background
        optimizer, and qdrant-edge-py 0.9 holds the GIL for the whole run (67 s for 16k
        points here), freezing the event loop even from a worker thread. Without it a search
        is an exact scan of the user's points via the tenant index: a few ms at 10k chunks
        per user (bench/search_latency.py), and HNSW did not beat that at 2k per user.
        """
        async with self._write_lock:
            return await asyncio.to_thread(lambda: self._open().optimize())

    async def healthy(self) -> bool:
        try:
            self._open().count(qe.CountRequest(exact=False))
        except Exception:
            return False
        return True

    async def close(self) -> None:
        async with self._write_lock:
            shard, self._shard = self._shard, None
            if shard is not None:
                await asyncio.to_thread(_flush_and_close, shard)


def _flush_and_close(shard: qe.EdgeShard) -> None:
    shard.flush()
    shard.close()


