"""The vector store interface shared by the Qdrant Edge, Qdrant server and pgvector adapters.

Business code only sees these types. Every read and delete takes a `ChunkFilter`, built by
`storage.access` from the caller's `Access` (it always pins the owners the caller may read):
a request can narrow a search (a collection, document ids, metadata values) but never widen
it. `storage.filters` turns a `ChunkFilter` into each store's filter.

Every point carries its *owner*: the owner of the document's collection, a user id for a
personal collection or `org:<organization id>` for an organization's (storage/access.py).
The payload key is `user_id` (and the pgvector column of that name) because points were
partitioned by user before organizations existed; keeping the key means no stored point
needs rewriting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from rag_service.errors import BadRequest
from rag_service.storage.models import DEFAULT_COLLECTION

SearchMode = Literal["hybrid", "dense", "keyword"]

# Payload keys written with every point.
OWNER_KEY = "user_id"  # the owner (see the module docstring), a keyword tenant index
DOCUMENT_ID_KEY = "document_id"
METADATA_KEY = "metadata"
# The document's collection, absent for the owner's default personal collection (so points
# written before collections existed are in it).
COLLECTION_ID_KEY = "collection_id"
# The id of every user's default personal collection (storage/models.py); never stored in a point.
# The ingestion run (claim generation) that wrote the point; points written before
# generations existed have none and count as generation 0.
GENERATION_KEY = "generation"

# Names of the two vectors of a point in the Qdrant collections (Edge and server).
DENSE = "dense"
SPARSE = "bm25"
# Hybrid search fuses the dense and keyword rankings with Reciprocal Rank Fusion, the same
# in every adapter: the standard RRF constant (Cormack et al.).
RRF_K = 60


def prefetch_limit(limit: int) -> int:
    """Candidates each side of a hybrid query contributes to the fusion.

    Deep enough that a chunk ranked moderately by both dense and BM25 can be found by
    both lists and win the fusion; shallow enough to stay cheap (see bench/search_latency.py).
    """
    return max(limit * 4, 40)


@dataclass(frozen=True)
class SparseVector:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True, kw_only=True)
class StoredChunk:
    """What every stored point and every search hit carries: the chunk's id (a UUID string),
    its text and where it sits in its document, the document's title and metadata."""

    id: str
    document_id: str
    chunk_index: int
    text: str
    title: str
    start: int
    end: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ChunkPoint(StoredChunk):
    """One chunk to store: its owner and collection, vectors and ingestion run besides the chunk itself."""

    owner: str
    dense: list[float]
    sparse: SparseVector
    generation: int = 0
    collection_id: str = DEFAULT_COLLECTION

    def payload(self) -> dict[str, Any]:
        collection = {} if self.collection_id == DEFAULT_COLLECTION else {COLLECTION_ID_KEY: self.collection_id}
        return {
            OWNER_KEY: self.owner,
            **collection,
            DOCUMENT_ID_KEY: self.document_id,
            "chunk_index": self.chunk_index,
            "text": self.text,
            "title": self.title,
            "start": self.start,
            "end": self.end,
            METADATA_KEY: self.metadata,
            GENERATION_KEY: self.generation,
        }


@dataclass(frozen=True, kw_only=True)
class ChunkHit(StoredChunk):
    """A search result: the stored chunk and its score for the query."""

    score: float

    @classmethod
    def from_payload(cls, point_id: Any, score: float, payload: dict[str, Any]) -> ChunkHit:
        return cls(
            id=str(point_id),
            score=float(score),
            document_id=payload[DOCUMENT_ID_KEY],
            chunk_index=int(payload["chunk_index"]),
            text=payload["text"],
            title=payload.get("title", ""),
            start=int(payload.get("start", 0)),
            end=int(payload.get("end", 0)),
            metadata=payload.get(METADATA_KEY) or {},
        )


@dataclass(frozen=True)
class ChunkFilter:
    """Conditions every matching point must meet. Build it with `storage.access` only.

    `owners` are the owner keys a point may have; empty only in `access.document_points`,
    the bookkeeping filter of one document's points keyed by its (globally unique) id.
    `collection_id` narrows to one collection (DEFAULT_COLLECTION: points without one).
    """

    owners: tuple[str, ...]
    collection_id: str | None = None
    document_ids: tuple[str, ...] = ()
    # metadata field -> accepted values (any of them)
    metadata: tuple[tuple[str, tuple[str | int | float | bool, ...]], ...] = ()
    # Ingestion bookkeeping, never set from a request (see `access.generation_filter`).
    generation: int | None = None
    generation_below: int | None = None

    def access_only(self) -> ChunkFilter:
        """The same access without the narrowing: what a keyword search computes IDF over."""
        return ChunkFilter(owners=self.owners)


@dataclass(frozen=True)
class QueryVectors:
    dense: list[float]
    sparse: SparseVector


class VectorStore(Protocol):
    """A single collection of chunks for all users, partitioned by the owner payload.

    Async so the server adapter never blocks the event loop; the embedded adapter runs
    its (fast, in-process) calls inline and its bulk writes in a worker thread.
    """

    collection: str
    # Only this process may open the store (Qdrant Edge's directory): a claim taken before
    # the process started belongs to no live run (documents/maintenance.py).
    single_process: bool

    async def ensure_collection(self) -> None:
        """Create the collection and payload indexes if missing (idempotent)."""

    async def upsert(self, points: list[ChunkPoint]) -> None: ...

    async def search(
        self,
        query: QueryVectors,
        where: ChunkFilter,
        limit: int,
        mode: SearchMode = "hybrid",
        dense_score_threshold: float | None = None,
    ) -> list[ChunkHit]:
        """Best `limit` chunks matching `where`.

        `hybrid` fuses dense and BM25 candidates with reciprocal rank fusion in one query;
        `dense_score_threshold` drops dense candidates below that cosine similarity
        (in `dense` and `hybrid` modes).
        """
        ...

    async def delete(self, where: ChunkFilter) -> None:
        """Delete every point matching the filter (e.g. one document's chunks)."""

    async def count(self, where: ChunkFilter) -> int: ...

    async def healthy(self) -> bool: ...

    async def close(self) -> None: ...


_METADATA_KEY_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,3}")


def metadata_field(key: str) -> str:
    """Payload path of a metadata filter key, e.g. "lang" -> "metadata.lang".

    Keys are plain names (dots for nesting): no brackets, quotes or wildcards, so a
    filter key can only ever address a field inside the chunk's `metadata` object.
    """
    if not _METADATA_KEY_PATTERN.fullmatch(key):
        raise BadRequest(f"invalid metadata filter key {key[:80]!r}: use letters, digits, '_', '-' and '.'")
    return f"{METADATA_KEY}.{key}"
