"""SearchService against real parts (search_support.py): retrieval modes, bounds, and
collapsing chunks of one passage. Filters and tenant isolation are in test_search_filters.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from rag_service.config import Settings
from rag_service.errors import ServiceUnavailable, Unprocessable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.service import SearchService, collapse_hits, more_of_the_documents
from rag_service.storage.access import Access
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.vectors import ChunkHit
from search_support import (  # noqa: F401 - embedder, library, search_settings, service are fixtures
    ALICE,
    FLANGEWORT,
    Library,
    documents,
    embedder,
    library,
    search_settings,
    service,
)


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
    result = await service.search(Access(ALICE), "volcanic ash", mode="hybrid", include_embedding=True)
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
    with_vector = await service.search(Access(ALICE), "flangewort", mode="keyword", include_embedding=True)
    assert counting.calls == 1 and len(with_vector.query_embedding) == embedder.dimension


class WatchedStore:
    """The library's real store; each search's mode is recorded when it starts, and a
    keyword search can be made to fail."""

    def __init__(self, inner, fail_keyword: Exception | None = None) -> None:  # noqa: ANN001
        self.inner, self.fail_keyword = inner, fail_keyword
        self.started: list[str] = []
        self.keyword_started = asyncio.Event()

    async def search(self, query, where, limit, mode="hybrid", dense_score_threshold=None):  # noqa: ANN001, ANN201
        self.started.append(mode)
        if mode == "keyword":
            self.keyword_started.set()
            if self.fail_keyword is not None:
                raise self.fail_keyword
        return await self.inner.search(query, where, limit, mode, dense_score_threshold)


class EmbedderAfterKeywordSearch(CountingEmbedder):
    """Embeds only once the keyword search has started (or fails then, with `fail`)."""

    def __init__(self, inner: LocalEmbedder, store: WatchedStore, fail: Exception | None = None) -> None:
        super().__init__(inner)
        self.store, self.fail = store, fail

    async def embed(self, texts: list[str], task: str = "document") -> list[list[float]]:
        async with asyncio.timeout(30):  # liveness: a search that embeds first never gets here
            await self.store.keyword_started.wait()
        if self.fail is not None:
            raise self.fail
        return await super().embed(texts, task)


async def test_hybrid_searches_bm25_while_the_query_is_embedded(
    library: Library, embedder: LocalEmbedder, search_settings: Settings
) -> None:
    store = WatchedStore(library.store)
    service = SearchService(store, library.sparse, EmbedderAfterKeywordSearch(embedder, store), search_settings)
    result = await service.search(Access(ALICE), "flangewort valve", mode="hybrid")
    assert store.started == ["keyword", "dense"]
    assert documents(result)[0] == library.id(ALICE, "Valve log")


async def test_a_failed_embedding_fails_the_hybrid_search_with_its_own_error(
    library: Library, embedder: LocalEmbedder, search_settings: Settings
) -> None:
    store = WatchedStore(library.store)
    failing = EmbedderAfterKeywordSearch(embedder, store, fail=ServiceUnavailable("the encoder is gone"))
    service = SearchService(store, library.sparse, failing, search_settings)
    with pytest.raises(ServiceUnavailable, match="the encoder is gone"):
        await service.search(Access(ALICE), "flangewort valve", mode="hybrid")
    assert store.started == ["keyword"]


async def test_a_failed_keyword_search_fails_the_hybrid_search_with_its_own_error(
    library: Library, embedder: LocalEmbedder, search_settings: Settings
) -> None:
    store = WatchedStore(library.store, fail_keyword=ServiceUnavailable("the vector store is gone"))
    service = SearchService(store, library.sparse, embedder, search_settings)
    with pytest.raises(ServiceUnavailable, match="the vector store is gone"):
        await service.search(Access(ALICE), "flangewort valve", mode="hybrid")


async def test_retrieval_text_replaces_the_query_for_retrieval(service: SearchService, library: Library) -> None:
    result = await service.search(Access(ALICE), "and what about that one?", mode="keyword",
                                  retrieval_text="the flangewort valve... and what about that one?")
    assert documents(result)[0] == library.id(ALICE, "Valve log")

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


# --- more chunks of the documents found (what the chat reads besides the top k) ----------


def test_more_of_the_documents_takes_the_next_best_chunks_of_the_kept_documents_only() -> None:
    kept = [hit("a", 3, 0.9, 300, 420), hit("b", 0, 0.7, 0, 100)]
    candidates = [
        *kept,
        hit("a", 4, 0.85, 400, 520),  # overlaps a#3: it repeats a kept passage
        hit("c", 1, 0.8, 100, 200),   # another document
        hit("a", 7, 0.6, 700, 800),
        hit("b", 5, 0.55, 500, 600),
        hit("b", 6, 0.5, 580, 700),   # overlaps b#5, taken just before it
        hit("a", 9, 0.4, 900, 1000),
    ]
    assert [h.id for h in more_of_the_documents(candidates, kept, 5)] == ["a-7", "b-5", "a-9"]
    assert [h.id for h in more_of_the_documents(candidates, kept, 2)] == ["a-7", "b-5"]
    assert more_of_the_documents(candidates, kept, 0) == []
    assert more_of_the_documents(candidates, [], 5) == []


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
async def test_same_document_chunks_add_distinct_chunks_of_the_documents_found(
        service: SearchService, library: Library, mode: str) -> None:
    query = "volcano eruption lava ash magma"
    plain = await service.search(Access(ALICE), query, top_k=1, mode=mode)
    result = await service.search(Access(ALICE), query, top_k=1, mode=mode, same_document_chunks=2)

    assert [h.id for h in result.hits] == [h.id for h in plain.hits]  # the top k are unchanged
    (first,) = result.hits
    assert first.document_id == library.id(ALICE, "Volcanoes")
    more = result.same_document_hits
    assert len(more) == 2
    assert {h.document_id for h in more} == {first.document_id}
    chunks = [first, *more]
    assert len({h.chunk_index for h in chunks}) == 3
    spans = sorted((h.start, h.end) for h in chunks)
    assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:]))
    assert [h.score for h in more] == sorted((h.score for h in more), reverse=True)
    assert plain.same_document_hits == []


SOCKETS_PAGE = "\n\n".join([
    "Reuse port sockets: several sockets may reuse one port when each of them sets the reuse port option first.",
    "Weather notes: the morning was grey and cold, with a light drizzle over the hills and fog along the river "
    "valley until noon, when the clouds finally broke.",
    "Garden notes: the tomatoes ripened late this year, the beans climbed the fence, and the pumpkins spread "
    "across the lawn until the first frost came in October.",
    "The daemon writes its pid file under /run and records there the port it listens on.",
])


async def test_more_chunks_come_from_the_documents_found_however_far_down_the_collection(
        embedder: LocalEmbedder, search_settings: Settings, tmp_path: Path) -> None:
    # 45 other pages about ports and sockets outrank the pid-file passage of the page found
    # (it shares only "port" with the question) in every list of the whole collection; among
    # that page's own chunks it is the best after the one found.
    settings = search_settings.model_copy(update={"data_dir": tmp_path})
    await asyncio.to_thread(run_migrations, settings)
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(tmp_path / "qdrant", collection="far", dimension=embedder.dimension)
    await store.ensure_collection()
    try:
        pages = Library(store, embedder, settings, sessionmaker)
        page = await pages.add(ALICE, "Sockets", SOCKETS_PAGE)
        for n in range(45):
            await pages.add(ALICE, f"Service {n}", f"Service {n} listens on port {8000 + n} and may reuse the sockets bound to it.")
        service = SearchService(store, pages.sparse, embedder, settings)
        for mode in ("hybrid", "dense", "keyword"):
            result = await service.search(Access(ALICE), "reuse port sockets", top_k=1, mode=mode,
                                          same_document_chunks=1)
            assert [h.document_id for h in result.hits] == [page], mode
            assert result.hits[0].text.startswith("Reuse port sockets"), mode
            assert [h.document_id for h in result.same_document_hits] == [page], mode
            assert "pid file" in result.same_document_hits[0].text, mode
    finally:
        await store.close()
        await engine.dispose()


async def test_the_top_k_bound_is_the_configured_one(library: Library, embedder: LocalEmbedder,
                                                     search_settings: Settings) -> None:
    narrow = SearchService(library.store, library.sparse, embedder,
                           search_settings.model_copy(update={"max_search_top_k": 3}))
    assert len((await narrow.search(Access(ALICE), "flangewort", top_k=3)).hits) <= 3
    with pytest.raises(Unprocessable, match="max_search_top_k") as refused:
        await narrow.search(Access(ALICE), "flangewort", top_k=4)
    assert refused.value.code == "validation_error" and refused.value.details[0]["field"] == "top_k"
