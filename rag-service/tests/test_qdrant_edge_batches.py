"""Qdrant Edge writes in small operations (so the event loop gets the GIL back between
them, see bench/edge_gil.py): upserts and deletes spanning many pages change exactly
the points they should."""

from __future__ import annotations

import uuid

from rag_service.storage.access import Access, access_filter
from rag_service.storage.qdrant_edge import DELETE_BATCH, UPSERT_BATCH, EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint

DIM = 4
ENCODER = SparseEncoder()


def points(user: str, document: str, n: int) -> list[ChunkPoint]:
    sparse = ENCODER.encode_documents(["paging test chunk"])[0]
    return [
        ChunkPoint(id=str(uuid.uuid4()), owner=user, document_id=document, chunk_index=i, text="paging test chunk",
                   title="t", start=0, end=17, dense=[1.0, float(i % 7), 0.5, 0.25], sparse=sparse)
        for i in range(n)
    ]


async def test_deletes_and_upserts_spanning_many_operations(tmp_path):
    store = EdgeVectorStore(tmp_path / "edge", "paging", DIM)
    await store.ensure_collection()
    try:
        big = 3 * DELETE_BATCH + 7
        assert big > 2 * UPSERT_BATCH
        # Interleave the documents so every scroll page mixes points to delete and to keep.
        mixed = [p for pair in zip(points("alice", "big", big), points("alice", "keep", big)) for p in pair]
        await store.upsert(mixed + points("bob", "big", 50))
        assert await store.count(access_filter(Access("alice"), document_ids=["big"])) == big
        assert await store.count(access_filter(Access("alice"), document_ids=["keep"])) == big

        await store.delete(access_filter(Access("alice"), document_ids=["big"]))
        assert await store.count(access_filter(Access("alice"), document_ids=["big"])) == 0
        assert await store.count(access_filter(Access("alice"), document_ids=["keep"])) == big
        assert await store.count(access_filter(Access("bob"))) == 50

        await store.delete(access_filter(Access("alice")))
        assert await store.count(access_filter(Access("alice"))) == 0
        assert await store.count(access_filter(Access("bob"))) == 50
        await store.delete(access_filter(Access("nobody")))  # nothing to delete: returns
    finally:
        await store.close()
