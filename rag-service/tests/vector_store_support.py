"""Shared data of the vector store tests: small hand-made dense vectors, real BM25 sparse
vectors, and two users whose chunks share vocabulary and metadata values on purpose."""

from __future__ import annotations

import math
import uuid

from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint, QueryVectors

DIM = 8
ENCODER = SparseEncoder()
MODES = ("hybrid", "dense", "keyword")
ALICE, BOB = "user-alice", "user-bob"


def unit(*components: float) -> list[float]:
    padded = list(components) + [0.0] * (DIM - len(components))
    norm = math.sqrt(sum(c * c for c in padded))
    return [c / norm for c in padded]


def chunk(user: str, document: str, index: int, text: str, dense: list[float], **metadata) -> ChunkPoint:
    return ChunkPoint(
        id=str(uuid.uuid4()),
        owner=user,
        document_id=document,
        chunk_index=index,
        text=text,
        title=f"{document} title",
        start=index * 100,
        end=index * 100 + len(text),
        dense=dense,
        sparse=ENCODER.encode_documents([text])[0],
        metadata=metadata,
    )


def query(text: str, dense: list[float]) -> QueryVectors:
    return QueryVectors(dense=dense, sparse=ENCODER.encode_query(text))


# Alice: two documents; Bob: one. Bob's chunks reuse Alice's vocabulary and metadata values
# on purpose, so only the user id keeps them apart.
A1_KERNEL = chunk(ALICE, "doc-a1", 0, "The kernel scheduler assigns processes to CPU cores.", unit(1),
                  lang="en", year=2020, draft=False, rating=4.5)
A1_MEMORY = chunk(ALICE, "doc-a1", 1, "Virtual memory pages are swapped to disk by the kernel.", unit(1, 1),
                  lang="en", year=2021, draft=True, rating=3.0)
A2_ZEBRA = chunk(ALICE, "doc-a2", 0, "A zebra crossing keeps pedestrians safe on busy roads.", unit(0, 0, 1),
                 lang="fr", year=2020, draft=False, rating=4.5)
B1_KERNEL = chunk(BOB, "doc-b1", 0, "Bob notes: the kernel scheduler and memory pages.", unit(0, 0, 0, 1),
                  lang="en", year=2020, draft=False, rating=4.5)
ALICE_POINTS = [A1_KERNEL, A1_MEMORY, A2_ZEBRA]
ALL_POINTS = [*ALICE_POINTS, B1_KERNEL]


def ids(hits) -> set[str]:
    return {hit.id for hit in hits}
