"""The generation filters ingestion claims rely on, for every vector store adapter (Qdrant
Edge, pgvector, and the server adapter over qdrant-client's in-memory local mode): exactly one
generation, and "below n", which also matches points written before generations existed."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import pytest

from rag_service.storage.access import Access, access_filter, document_points
from rag_service.storage.vectors import GENERATION_KEY, ChunkPoint
from test_vector_store_contract import ALICE, BOB, chunk, store, unit  # noqa: F401 (store: fixture)

pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
]


@dataclass(frozen=True)
class LegacyPoint(ChunkPoint):
    """A point as written before ingestion claims: no generation in its payload."""

    def payload(self) -> dict[str, Any]:
        payload = super().payload()
        del payload[GENERATION_KEY]
        return payload


def point(user: str, document: str, index: int, generation: int) -> ChunkPoint:
    return replace(chunk(user, document, index, f"page {index} of {document}", unit(1, index)), generation=generation)


async def test_document_points_select_exactly_and_below(store) -> None:
    legacy = chunk(ALICE, "doc", 9, "an old page", unit(0, 1))
    await store.upsert([
        LegacyPoint(**{f: getattr(legacy, f) for f in legacy.__dataclass_fields__}),
        *(point(ALICE, "doc", i, generation) for i, generation in enumerate([1, 2, 2, 3])),
        point(ALICE, "other", 0, 1),
        # The same document under its previous owner (before a move): document ids are
        # unique across owners, so a document's bookkeeping removes these too.
        point("org:o1", "doc", 7, 1),
        point(BOB, "bobs-doc", 0, 1),  # another document: never touched
    ])
    assert await store.count(document_points("doc", generation=2)) == 2
    assert await store.count(document_points("doc", below=2)) == 3  # generation 1 (both owners) and the legacy point
    await store.delete(document_points("doc", below=3))
    assert await store.count(access_filter(Access(ALICE), document_ids=["doc"])) == 1
    assert await store.count(access_filter(Access(ALICE, {"o1": "member"}), document_ids=["doc"])) == 1
    assert await store.count(document_points("doc", generation=3)) == 1
    await store.delete(document_points("doc", generation=3))
    assert await store.count(access_filter(Access(ALICE), document_ids=["doc"])) == 0
    assert await store.count(access_filter(Access(ALICE), document_ids=["other"])) == 1
    assert await store.count(access_filter(Access(BOB))) == 1
