"""Hybrid ranking (search/ranking.py): weighted rank fusion, the title field and document
aggregation, first on hand-made candidate lists, then through SearchService on every
vector store (Qdrant Edge, qdrant-client local mode, pgvector) with MiniLM and BM25."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from rag_service.config import Settings
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.ranking import BASELINE_RANKING, DEFAULT_RANKING, RankingConfig, fuse, title_words
from rag_service.search.service import SearchService
from rag_service.storage.access import Access
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkHit, ChunkPoint

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")
ENCODER = SparseEncoder()
NO_TITLE = RankingConfig(title_weight=0.0, document_weight=0.0)


def hit(document: str, index: int, title: str = "") -> ChunkHit:
    return ChunkHit(id=f"{document}-{index}", document_id=document, chunk_index=index, text="", start=index * 100,
                    end=index * 100 + 90, title=title or f"{document} notes", score=0.0)


def terms(text: str) -> frozenset[int]:
    return frozenset(ENCODER.encode_query(text).indices)


def title_terms(title: str) -> frozenset[int]:
    return terms(title_words(title))


def order(hits: list[ChunkHit]) -> list[str]:
    return [h.id for h in hits]


def test_fusion_adds_weighted_reciprocal_ranks() -> None:
    a, b, c = hit("a", 0), hit("b", 0), hit("c", 0)
    fused = fuse([a, b], [b, c], frozenset(), title_terms, NO_TITLE)
    assert order(fused) == ["b-0", "a-0", "c-0"]
    assert [h.score for h in fused] == pytest.approx([1 / 61 + 1 / 60, 1 / 60, 1 / 61])
    # Weights move a list's say: keyword-only ranking follows the keyword list.
    keyword_only = fuse([a, b], [b, c], frozenset(), title_terms, RankingConfig(dense_weight=0, title_weight=0,
                                                                                  document_weight=0))
    assert order(keyword_only) == ["b-0", "c-0"]


def test_a_title_match_outranks_a_body_mention() -> None:
    body = hit("notes", 0, title="backup-notes.txt")  # mentions rsync in its text: first by BM25 and dense
    page = hit("page", 0, title="rsync(1)")
    dense, keyword = [body, page], [body, page]
    query = terms("rsync options")
    assert order(fuse(dense, keyword, query, title_terms, NO_TITLE))[0] == "notes-0"
    assert order(fuse(dense, keyword, query, title_terms, DEFAULT_RANKING))[0] == "page-0"


def test_the_title_list_ranks_by_share_of_query_terms() -> None:
    half = hit("half", 0, title="mount(8)")
    full = hit("full", 0, title="mount.cifs(8)")
    other = hit("other", 0, title="fstab(5)")
    fused = fuse([other, half, full], [other, half, full], terms("mount cifs"), title_terms,
                 RankingConfig(document_weight=0.0, title_weight=3.0))
    assert order(fused) == ["full-0", "half-0", "other-0"]


def test_stemmed_title_terms_match_and_stopwords_do_not() -> None:
    assert terms("mounting filesystems") & title_terms("mount(8)")
    assert not terms("what is the") & title_terms("the-what(7)")
    assert title_words("systemd.exec(5)") == "systemd exec 5"


def test_several_matching_passages_outrank_one_lucky_chunk() -> None:
    lucky = hit("lucky", 0)
    thorough = [hit("thorough", i) for i in range(3)]
    ranked = [lucky, *thorough]
    without = fuse(ranked, ranked, frozenset(), title_terms, NO_TITLE)
    assert order(without)[0] == "lucky-0"
    aggregated = fuse(ranked, ranked, frozenset(), title_terms, RankingConfig(title_weight=0.0))
    assert order(aggregated)[0] == "thorough-0"
    # The document's best chunk carries the document's score; its other chunks stay below it.
    scores = {h.id: h.score for h in aggregated}
    assert scores["thorough-0"] > scores["thorough-1"] > scores["thorough-2"]


def test_only_the_documents_other_best_chunks_count() -> None:
    one = [hit("one", i) for i in range(5)]
    aggregated = fuse(one, one, frozenset(), title_terms, RankingConfig(title_weight=0.0, aggregated_chunks=2))
    best = max(aggregated, key=lambda h: h.score)
    own = 2 / 60
    assert best.score == pytest.approx(own + 0.5 * (2 / 61 + 2 / 62))


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError):
        RankingConfig(fusion="sum")
    with pytest.raises(ValueError):
        RankingConfig(title_weight=-1)


# --- through SearchService on each store -----------------------------------------------

USER = "ranking-user"
# A short note that mentions the tool in passing, and the tool's own page, whose text never
# names it (as a man page whose NAME line is the title).
NOTE = ("Backup notes", "For the nightly job I copied the photos with rsync once; now tar packs them and "
        "scp sends the archive.")
PAGE = ("rsync(1)", "A fast, versatile, remote (and local) file-copying tool. It is famous for its delta-transfer "
        "algorithm, which reduces the amount of data sent over the network by sending only the differences "
        "between the source files and the existing files in the destination.")
FILLER = [("Tea", "Green tea is steamed, black tea is oxidised before drying."),
          ("Bridges", "Suspension bridges hang their deck from cables slung over towers.")]


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    return LocalEmbedder(Settings(_env_file=None, embedding_provider="local"))


@pytest.fixture(params=["edge", "qdrant-local-mode", pytest.param("pgvector", marks=pytest.mark.postgres)])
async def store(request, tmp_path: Path, embedder: LocalEmbedder):
    dimension = embedder.dimension
    if request.param == "edge":
        vector_store = EdgeVectorStore(tmp_path / "shard", collection="ranking", dimension=dimension)
    elif request.param == "pgvector":
        url = request.getfixturevalue("pgvector_url")
        vector_store = PgVectorStore(url, collection=f"ranking_{uuid.uuid4().hex[:12]}", dimension=dimension)
    else:
        vector_store = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="ranking",
                                         dimension=dimension)
    await vector_store.ensure_collection()
    points = []
    for title, text in [NOTE, PAGE, *FILLER]:
        indexed = f"{title}\n\n{text}"  # what DocumentService embeds and BM25-encodes (chunking.embedding_text)
        [dense] = await embedder.embed([indexed])
        points.append(ChunkPoint(id=str(uuid.uuid4()), owner=USER, document_id=title, chunk_index=0, text=text,
                                 title=title, start=0, end=len(text), dense=dense,
                                 sparse=ENCODER.encode_documents([indexed])[0]))
    await vector_store.upsert(points)
    yield vector_store
    await vector_store.close()


def search_service(store, embedder: LocalEmbedder, ranking: RankingConfig) -> SearchService:
    return SearchService(store, ENCODER, embedder, Settings(_env_file=None), ranking=ranking)


async def test_every_store_ranks_the_titled_page_above_the_passing_mention(store, embedder) -> None:
    query = "rsync"
    before = await search_service(store, embedder, BASELINE_RANKING).search(Access(USER), query, top_k=3)
    after = await search_service(store, embedder, DEFAULT_RANKING).search(Access(USER), query, top_k=3)
    assert before.hits[0].document_id == "Backup notes"  # the store's own fusion: BM25 favours the short note
    assert after.hits[0].document_id == "rsync(1)"
    assert {h.document_id for h in after.hits} >= {"Backup notes", "rsync(1)"}


async def test_min_score_still_filters_dense_matches_only(store, embedder) -> None:
    service = search_service(store, embedder, DEFAULT_RANKING)
    strict = await service.search(Access(USER), "rsync", top_k=4, min_score=0.99)
    # No chunk is that close by cosine: only BM25 matches (the two that say rsync) remain.
    assert {h.document_id for h in strict.hits} == {"Backup notes", "rsync(1)"}
    assert strict.hits[0].document_id == "rsync(1)"
