"""SearchService filters against real parts (search_support.py): document ids and metadata
narrow the results, and no filter reaches another user's documents.
"""

from __future__ import annotations

from typing import Any

import pytest

from rag_service.errors import Unprocessable
from rag_service.search.service import SearchService
from rag_service.storage.access import Access
from search_support import (  # noqa: F401 - embedder, library, search_settings, service are fixtures
    ALICE,
    BOB,
    Library,
    documents,
    embedder,
    library,
    search_settings,
    service,
)


# --- filters and isolation --------------------------------------------------------------


def every_document(result: Any) -> list[str]:
    """The documents of the top hits and of the more chunks asked for (`same_document_chunks`)."""
    return [hit.document_id for hit in (*result.hits, *result.same_document_hits)]


async def test_document_id_filter_narrows(service: SearchService, library: Library) -> None:
    photosynthesis = library.id(ALICE, "Photosynthesis")
    result = await service.search(Access(ALICE), "flangewort", filters={"document_ids": [photosynthesis]}, top_k=10)
    assert set(documents(result)) == {photosynthesis}


@pytest.mark.parametrize(("metadata", "expected"), [
    ({"topic": "biology"}, {"Photosynthesis"}),
    ({"topic": ["biology", "geology"]}, {"Photosynthesis", "Volcanoes"}),
    ({"year": 2023}, {"Valve log"}),
    ({"reviewed": True}, {"Valve log"}),
    ({"topic": "geology", "year": 2022}, set()),
    ({"missing_field": "x"}, set()),
])
async def test_metadata_filter_narrows(service: SearchService, library: Library, metadata: dict,
                                       expected: set[str]) -> None:
    for mode in ("hybrid", "dense", "keyword"):
        result = await service.search(Access(ALICE), "volcano eruption leaves valve", mode=mode, top_k=20,
                                      filters={"metadata": metadata})
        assert set(documents(result)) <= {library.id(ALICE, name) for name in expected}
        # More chunks of the documents found come from a second search: filtered alike.
        first = await service.search(Access(ALICE), "volcano eruption leaves valve", mode=mode, top_k=1,
                                     filters={"metadata": metadata}, same_document_chunks=10)
        assert set(every_document(first)) <= {library.id(ALICE, name) for name in expected}
    hybrid = await service.search(Access(ALICE), "volcano eruption leaves valve", top_k=20, filters={"metadata": metadata})
    assert set(documents(hybrid)) == {library.id(ALICE, name) for name in expected}


async def test_search_never_returns_another_users_documents(service: SearchService, library: Library) -> None:
    bob_ids = {library.id(BOB, "Baking"), library.id(BOB, "Bob's valve log")}
    for mode in ("hybrid", "dense", "keyword"):
        result = await service.search(Access(ALICE), "flangewort valve bread yeast", mode=mode, top_k=50)
        assert result.hits and not set(documents(result)) & bob_ids
        first = await service.search(Access(ALICE), "flangewort valve bread yeast", mode=mode, top_k=1,
                                     same_document_chunks=10)
        assert first.hits and not set(every_document(first)) & bob_ids


@pytest.mark.parametrize("filters", [
    {"document_ids": ["ALICE:Volcanoes", "ALICE:Valve log"]},
    {"metadata": {"topic": ["geology", "maintenance", "biology"]}},
    {"metadata": {"user_id": ALICE}},
    {"metadata": {"user_id": [ALICE, BOB]}},
    {"document_ids": ["ALICE:Valve log"], "metadata": {"user_id": ALICE}},
])
async def test_filters_cannot_reach_another_users_documents(service: SearchService, library: Library,
                                                            filters: dict) -> None:
    alice_ids = {library.id(ALICE, name) for name in ("Volcanoes", "Photosynthesis", "Valve log")}
    if "document_ids" in filters:  # Bob names Alice's real document ids
        filters = {**filters, "document_ids": [library.id(ALICE, ref.split(":")[1]) for ref in filters["document_ids"]]}
    for mode in ("hybrid", "dense", "keyword"):
        result = await service.search(Access(BOB), "flangewort valve volcano eruption", mode=mode, top_k=50, filters=filters)
        assert not set(documents(result)) & alice_ids
        first = await service.search(Access(BOB), "flangewort valve volcano eruption", mode=mode, top_k=1,
                                     filters=filters, same_document_chunks=10)
        assert not set(every_document(first)) & alice_ids


async def test_a_user_id_filter_key_is_rejected(service: SearchService) -> None:
    with pytest.raises(Unprocessable, match="user_id"):
        await service.search(Access(BOB), "flangewort", filters={"user_id": ALICE})


@pytest.mark.parametrize("filters", [
    {"tenant": "x"},
    {"metadata": {"topic": {"$ne": "x"}}},
    {"metadata": {"topic": [["nested"]]}},
    {"metadata": {"topic": []}},
    {"metadata": {"topic": ["v"] * 51}},
    {"metadata": {f"field{i}": "v" for i in range(17)}},
    {"metadata": {"bad key!": "v"}},
    {"metadata": {"topic": None}},
    {"document_ids": []},
    {"document_ids": "not-a-list"},
    {"document_ids": [f"d{i}" for i in range(101)]},
    ["not", "an", "object"],
])
async def test_bad_filters_are_rejected(service: SearchService, filters: Any) -> None:
    with pytest.raises(Unprocessable):
        await service.search(Access(ALICE), "flangewort", filters=filters)
