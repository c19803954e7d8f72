"""SearchService against real parts: documents saved by DocumentService (SQLite, the real
chunker with small chunks so one document spans several, MiniLM, BM25) into Qdrant Edge
in a tmp dir.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio

from rag_service.config import Settings
from rag_service.documents.service import DocumentService
from rag_service.errors import Unprocessable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.service import SearchService, collapse_hits
from rag_service.storage.access import Access
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.vectors import ChunkHit

ALICE, BOB = "user-alice", "user-bob"

VOLCANO = (
    "Volcanoes form where magma from the mantle reaches the surface. "
    "Stratovolcanoes are steep cones built from layers of lava and ash.\n\n"
    "When gas pressure in the magma chamber rises, an eruption blasts ash and pumice high into "
    "the atmosphere. Pyroclastic flows race down the slopes at hundreds of kilometres per hour.\n\n"
    "Shield volcanoes, like those of Hawaii, erupt runny basaltic lava that spreads into broad, "
    "gentle slopes. Lava tubes carry molten rock for kilometres under a cooled crust.\n\n"
    "Volcanologists watch for earthquakes, ground swelling and sulfur dioxide to forecast eruptions "
    "and warn the people living near an active volcano.\n\n"
    "Volcanic ash makes soils fertile, which is why farms crowd the flanks of many volcanoes "
    "despite the danger of another eruption."
)
PHOTOSYNTHESIS = (
    "Chloroplasts capture sunlight and use its energy to turn water and carbon dioxide into "
    "glucose, releasing oxygen as a by-product."
)
FLANGEWORT = (
    "Maintenance log: the XQ-7731 flangewort valve was replaced during the spring inspection; "
    "the crew noted nothing else of interest."
)
BAKING = (
    "Bread rises because yeast ferments sugars in the dough and releases carbon dioxide gas, "
    "which the gluten network traps in small bubbles."
)


@pytest.fixture(scope="module")
def search_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("search-data"),
        embedding_provider="local",
        chunk_size_tokens=48,
        chunk_overlap_tokens=12,
    )


@pytest.fixture(scope="module")
def embedder(search_settings: Settings) -> LocalEmbedder:
    return LocalEmbedder(search_settings)


class Library:
    """Alice's and Bob's documents, saved through the real ingestion pipeline
    (DocumentService: SQLite row, chunking, MiniLM + BM25, Qdrant Edge upsert)."""

    def __init__(self, store: EdgeVectorStore, embedder: LocalEmbedder, settings: Settings,
                 sessionmaker: Any) -> None:
        self.store = store
        self.embedder = embedder
        self.settings = settings
        self.sparse = SparseEncoder()
        self.sessionmaker = sessionmaker
        self.ids: dict[tuple[str, str], str] = {}
        self.chunk_counts: dict[str, int] = {}

    async def add(self, user: str, title: str, content: str, **metadata: Any) -> str:
        async with self.sessionmaker() as session:
            documents = DocumentService(session, self.store, self.sparse, self.embedder, self.settings)
            document, created = await documents.save(user, title, content, metadata)
        assert created and document.status == "ready"
        self.ids[(user, title)] = document.id
        self.chunk_counts[document.id] = document.chunk_count
        return document.id

    def id(self, user: str, title: str) -> str:
        return self.ids[(user, title)]


@pytest_asyncio.fixture(scope="module")
async def library(search_settings: Settings, embedder: LocalEmbedder) -> Any:
    await asyncio.to_thread(run_migrations, search_settings)
    engine, sessionmaker = create_engine_and_sessionmaker(search_settings)
    store = EdgeVectorStore(search_settings.data_dir / "qdrant", collection="chunks", dimension=embedder.dimension)
    await store.ensure_collection()
    lib = Library(store, embedder, search_settings, sessionmaker)
    await lib.add(ALICE, "Volcanoes", VOLCANO, topic="geology", year=2021, lang="en")
    await lib.add(ALICE, "Photosynthesis", PHOTOSYNTHESIS, topic="biology", year=2022, lang="en")
    # A `user_id` metadata field is just data: filtering on it must not reach across tenants.
    await lib.add(ALICE, "Valve log", FLANGEWORT, topic="maintenance", year=2023, lang="en", reviewed=True,
                  user_id=ALICE)
    # Bob shares Alice's vocabulary and metadata values on purpose: only the tenant separates them.
    await lib.add(BOB, "Baking", BAKING, topic="geology", year=2021, lang="en", user_id=ALICE)
    await lib.add(BOB, "Bob's valve log", FLANGEWORT.replace("spring", "autumn"), topic="maintenance")
    yield lib
    await store.close()
    await engine.dispose()


@pytest.fixture
def service(library: Library, embedder: LocalEmbedder, search_settings: Settings) -> SearchService:
    return SearchService(library.store, library.sparse, embedder, search_settings)


def documents(result: Any) -> list[str]:
    return [hit.document_id for hit in result.hits]


# --- modes ------------------------------------------------------------------------------


async def test_volcano_document_spans_several_chunks(library: Library) -> None:
    assert library.chunk_counts[library.id(ALICE, "Volcanoes")] >= 4


@pytest.mark.parametrize("mode", ["keyword", "hybrid"])
async def test_rare_exact_term_is_found_by_keyword_and_hybrid(service: SearchService, library: Library,
                                                             mode: str) -> None:
    result = await service.search(Access(ALICE), "flangewort", mode=mode)
    assert documents(result)[0] == library.id(ALICE, "Valve log")


async def test_keyword_mode_finds_nothing_without_shared_terms(service: SearchService, library: Library) -> None:
    result = await service.search(Access(ALICE), "how do leaves produce sugar with the sun", mode="keyword")
    assert library.id(ALICE, "Photosynthesis") not in documents(result)


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_paraphrase_is_found_by_dense_and_hybrid(service: SearchService, library: Library, mode: str) -> None:
    result = await service.search(Access(ALICE), "how do leaves produce sugar with the sun", mode=mode)
    assert documents(result)[0] == library.id(ALICE, "Photosynthesis")


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
async def test_hits_carry_the_stored_chunk(service: SearchService, library: Library, mode: str) -> None:
    result = await service.search(Access(ALICE), "flangewort valve", mode=mode, top_k=1)
    (hit,) = result.hits
    assert hit.title == "Valve log"
    assert hit.chunk_index == 0
    assert FLANGEWORT[hit.start:hit.end] == hit.text
    assert hit.metadata == {"topic": "maintenance", "year": 2023, "lang": "en", "reviewed": True, "user_id": ALICE}


async def test_query_embedding_is_the_dense_query_vector(service: SearchService, embedder: LocalEmbedder) -> None:
    result = await service.search(Access(ALICE), "volcanic ash", mode="hybrid")
    (expected,) = await embedder.embed(["volcanic ash"], task="query")
    assert result.query_embedding == pytest.approx(expected)
    assert len(result.query_embedding) == embedder.dimension


class CountingEmbedder:
    """The real embedder, counting calls (to show keyword mode skips the embedding)."""

    def __init__(self, inner: LocalEmbedder) -> None:
        self.inner = inner
        self.model_name, self.dimension = inner.model_name, inner.dimension
        self.calls = 0

    async def embed(self, texts: list[str], task: str = "document") -> list[list[float]]:
        self.calls += 1
        return await self.inner.embed(texts, task)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


async def test_keyword_mode_embeds_only_when_the_vector_is_requested(
    library: Library, embedder: LocalEmbedder, search_settings: Settings
) -> None:
    counting = CountingEmbedder(embedder)
    service = SearchService(library.store, library.sparse, counting, search_settings)
    without = await service.search(Access(ALICE), "flangewort", mode="keyword", include_embedding=False)
    assert counting.calls == 0 and without.query_embedding == []
    assert documents(without) == [library.id(ALICE, "Valve log")]
    with_vector = await service.search(Access(ALICE), "flangewort", mode="keyword")
    assert counting.calls == 1 and len(with_vector.query_embedding) == embedder.dimension


async def test_retrieval_text_replaces_the_query_for_retrieval(service: SearchService, library: Library) -> None:
    result = await service.search(Access(ALICE), "and what about that one?", mode="keyword",
                                  retrieval_text="the flangewort valve... and what about that one?")
    assert documents(result)[0] == library.id(ALICE, "Valve log")


# --- filters and isolation --------------------------------------------------------------


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
    hybrid = await service.search(Access(ALICE), "volcano eruption leaves valve", top_k=20, filters={"metadata": metadata})
    assert set(documents(hybrid)) == {library.id(ALICE, name) for name in expected}


async def test_search_never_returns_another_users_documents(service: SearchService, library: Library) -> None:
    bob_ids = {library.id(BOB, "Baking"), library.id(BOB, "Bob's valve log")}
    for mode in ("hybrid", "dense", "keyword"):
        result = await service.search(Access(ALICE), "flangewort valve bread yeast", mode=mode, top_k=50)
        assert result.hits and not set(documents(result)) & bob_ids


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


# --- bounds -----------------------------------------------------------------------------


@pytest.mark.parametrize("top_k", [1, 2, 4])
async def test_top_k_is_respected(service: SearchService, top_k: int) -> None:
    result = await service.search(Access(ALICE), "volcano eruption lava ash", top_k=top_k)
    assert len(result.hits) == top_k


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"query": ""}, "empty"),
    ({"query": "   \n"}, "empty"),
    ({"query": "x" * 2001}, "2000"),
    ({"query": "lava", "top_k": 0}, "top_k"),
    ({"query": "lava", "top_k": 51}, "top_k"),
    ({"query": "lava", "mode": "semantic"}, "mode"),
    ({"query": "lava", "mode": "keyword", "min_score": 0.2}, "min_score"),
    ({"query": "lava", "min_score": 1.5}, "min_score"),
])
async def test_bad_arguments_are_rejected(service: SearchService, kwargs: dict, message: str) -> None:
    with pytest.raises(Unprocessable, match=message):
        await service.search(Access(ALICE), **kwargs)


async def test_min_score_drops_weak_dense_matches(service: SearchService, library: Library) -> None:
    query = "how do leaves produce sugar with the sun"
    unfiltered = await service.search(Access(ALICE), query, mode="dense", top_k=10)
    assert len(unfiltered.hits) >= 3 and unfiltered.hits[-1].score < 0.3
    filtered = await service.search(Access(ALICE), query, mode="dense", top_k=10, min_score=0.3)
    assert filtered.hits and all(hit.score >= 0.3 for hit in filtered.hits)
    assert documents(filtered)[0] == library.id(ALICE, "Photosynthesis")
    assert len(filtered.hits) < len(unfiltered.hits)
    assert (await service.search(Access(ALICE), query, mode="dense", min_score=0.99)).hits == []
    # In hybrid mode the threshold removes the dense candidates; nothing shares a keyword.
    assert (await service.search(Access(ALICE), "zebras galloping", mode="hybrid", min_score=0.99)).hits == []


# --- collapsing chunks of one passage ---------------------------------------------------


async def test_one_document_cannot_crowd_out_the_others(service: SearchService, library: Library) -> None:
    volcano = library.id(ALICE, "Volcanoes")
    result = await service.search(Access(ALICE), "volcano eruption lava ash magma", top_k=3, mode="dense")
    volcano_hits = [hit for hit in result.hits if hit.document_id == volcano]
    assert result.hits[0].document_id == volcano
    assert len(volcano_hits) == 2  # the per-document cap, then other documents
    assert abs(volcano_hits[0].chunk_index - volcano_hits[1].chunk_index) > 1
    assert len(set(documents(result))) == 2


async def test_a_single_document_fills_top_k_with_distinct_text(service: SearchService, library: Library) -> None:
    volcano = library.id(ALICE, "Volcanoes")
    result = await service.search(Access(ALICE), "volcano eruption lava ash magma", top_k=5,
                                  filters={"document_ids": [volcano]})
    assert len(result.hits) == min(5, library.chunk_counts[volcano])
    spans = sorted((hit.start, hit.end) for hit in result.hits)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert [hit.score for hit in result.hits] == sorted((hit.score for hit in result.hits), reverse=True)


def hit(document: str, index: int, score: float, start: int, end: int) -> ChunkHit:
    return ChunkHit(id=f"{document}-{index}", score=score, document_id=document, chunk_index=index,
                    text="", title="", start=start, end=end, metadata={})


def test_collapse_keeps_distinct_passages_and_fills_without_duplicates() -> None:
    hits = [
        hit("a", 3, 0.9, 300, 420),
        hit("a", 4, 0.85, 400, 520),  # overlaps a#3: never returned
        hit("a", 2, 0.8, 200, 320),   # overlaps a#3 too
        hit("b", 0, 0.7, 0, 100),
        hit("a", 7, 0.6, 700, 800),   # distinct passage: second slot of "a"
        hit("a", 9, 0.55, 900, 1000),  # over the per-document cap: only a filler
        hit("c", 1, 0.5, 100, 200),
        hit("c", 2, 0.45, 200, 300),  # touches c#1 (adjacent): only a filler
    ]
    assert [h.id for h in collapse_hits(hits, 3, 2)] == ["a-3", "b-0", "a-7"]
    assert [h.id for h in collapse_hits(hits, 4, 2)] == ["a-3", "b-0", "a-7", "c-1"]
    assert [h.id for h in collapse_hits(hits, 6, 2)] == ["a-3", "b-0", "a-7", "a-9", "c-1", "c-2"]
    assert [h.id for h in collapse_hits(hits, 10, 1)] == ["a-3", "b-0", "a-7", "a-9", "c-1", "c-2"]
    assert [h.id for h in collapse_hits(hits, 2, 1)] == ["a-3", "b-0"]
    assert collapse_hits(hits, 0, 2) == []
    assert [h.id for h in collapse_hits(hits + hits[:1], 10, 5)] == ["a-3", "b-0", "a-7", "a-9", "c-1", "c-2"]


def test_collapse_orders_equal_scores_deterministically() -> None:
    hits = [hit("b", 0, 0.5, 0, 10), hit("a", 5, 0.5, 500, 510), hit("c", 1, 0.9, 0, 10), hit("a", 2, 0.5, 200, 210)]
    expected = ["c-1", "a-2", "a-5", "b-0"]
    assert [h.id for h in collapse_hits(hits, 4, 2)] == expected
    assert [h.id for h in collapse_hits(list(reversed(hits)), 4, 2)] == expected
