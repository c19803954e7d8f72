"""Hybrid ranking (search/ranking.py): score fusion, document aggregation, the lead passage
and the title field, first on hand-made candidate lists, then through SearchService on every
vector store (Qdrant Edge, qdrant-client local mode, pgvector) with MiniLM and BM25."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from rag_service.config import Settings
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.ranking import (
    BASELINE_RANKING,
    DEFAULT_RANKING,
    RankingConfig,
    fuse,
    passage_ranking,
    title_words,
)
from rag_service.search.service import SearchService
from rag_service.storage.access import Access
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkHit, ChunkPoint

pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")
ENCODER = SparseEncoder()
TITLED = RankingConfig(title_weight=1.0)
# The fusion and aggregation alone, for the tests of their arithmetic.
NO_LEAD = RankingConfig(lead_weight=0.0)


def hit(document: str, index: int, score: float = 0.0, title: str = "") -> ChunkHit:
    return ChunkHit(id=f"{document}-{index}", document_id=document, chunk_index=index, text="", start=index * 100,
                    end=index * 100 + 90, title=title or f"{document} notes", score=score)


def terms(text: str) -> frozenset[int]:
    return frozenset(ENCODER.encode_query(text).indices)


def title_terms(title: str) -> frozenset[int]:
    return terms(title_words(title))


def order(hits: list[ChunkHit]) -> list[str]:
    return [h.id for h in hits]


def test_scores_are_normalized_per_list_and_combined_by_weight() -> None:
    dense = [hit("a", 0, 0.9), hit("b", 0, 0.5)]
    keyword = [hit("b", 0, 10.0), hit("c", 0, 2.0)]
    fused = fuse(dense, keyword, frozenset(), title_terms, NO_LEAD)
    assert order(fused) == ["a-0", "b-0", "c-0"]
    assert [h.score for h in fused] == pytest.approx([0.6, 0.4, 0.0])
    keyword_leaning = fuse(dense, keyword, frozenset(), title_terms, RankingConfig(dense_weight=0.3, lead_weight=0.0))
    assert order(keyword_leaning)[0] == "b-0"


def test_how_far_ahead_a_match_is_counts_not_only_its_rank() -> None:
    # Rank fusion ties a and b (each first in one list); a's dense lead is large, b's BM25 lead tiny.
    dense = [hit("a", 0, 0.90), hit("b", 0, 0.30)]
    keyword = [hit("b", 0, 5.1), hit("a", 0, 5.0), hit("c", 0, 1.0)]
    fused = fuse(dense, keyword, frozenset(), title_terms)
    assert order(fused)[:2] == ["a-0", "b-0"]
    assert fused[0].score > fused[1].score + 0.5


def test_a_document_gets_the_credit_of_its_best_chunk_in_each_list() -> None:
    # x matches by meaning in one passage and by terms in another; y's one chunk is second in both.
    dense = [hit("x", 0, 0.9), hit("y", 0, 0.8), hit("z", 0, 0.4)]
    keyword = [hit("x", 1, 9.0), hit("y", 0, 8.0), hit("z", 0, 4.0)]
    chunks_alone = fuse(dense, keyword, frozenset(), title_terms,
                        RankingConfig(aggregate_documents=False, lead_weight=0.0))
    assert order(chunks_alone)[0] == "y-0"
    aggregated = fuse(dense, keyword, frozenset(), title_terms, NO_LEAD)
    assert order(aggregated)[:3] == ["x-0", "x-1", "y-0"]
    scores = {h.id: h.score for h in aggregated}
    # The document's best chunk carries the document's score (1.0: best in both lists); its
    # other chunk keeps its distance below it.
    assert scores["x-0"] == pytest.approx(1.0)
    assert scores["x-1"] == pytest.approx(1.0 - (0.6 - 0.4))


def test_a_document_whose_opening_matches_outranks_a_mention_further_in_another() -> None:
    # "guide" matches in its first chunk; "log" in its fifth, a shade better in both lists.
    dense = [hit("log", 4, 0.62), hit("guide", 0, 0.60), hit("noise", 0, 0.20)]
    keyword = [hit("log", 4, 7.2), hit("guide", 0, 7.0), hit("noise", 0, 1.0)]
    assert order(fuse(dense, keyword, frozenset(), title_terms, NO_LEAD))[:2] == ["log-4", "guide-0"]
    fused = fuse(dense, keyword, frozenset(), title_terms)
    assert order(fused)[:2] == ["guide-0", "log-4"]
    scores = {h.id: h.score for h in fused}
    # The lead adds lead_weight times the first chunk's own fused score to its document.
    own = 0.6 * (0.60 - 0.20) / 0.42 + 0.4 * (7.0 - 1.0) / 6.2
    assert scores["guide-0"] == pytest.approx(own * (1 + DEFAULT_RANKING.lead_weight))
    assert scores["log-4"] == pytest.approx(1.0)


def test_the_lead_bonus_lifts_every_chunk_of_its_document_alike() -> None:
    dense = [hit("manual", 3, 0.9), hit("manual", 0, 0.5), hit("other", 2, 0.85), hit("noise", 0, 0.1)]
    keyword = [hit("manual", 3, 6.0), hit("other", 2, 5.9), hit("noise", 0, 1.0)]
    fused = fuse(dense, keyword, frozenset(), title_terms)
    assert order(fused) == ["manual-3", "other-2", "manual-0", "noise-0"]
    without_lead = {h.id: h.score for h in fuse(dense, keyword, frozenset(), title_terms, NO_LEAD)}
    with_lead = {h.id: h.score for h in fused}
    lift = with_lead["manual-3"] - without_lead["manual-3"]
    assert lift > 0
    assert with_lead["manual-0"] - without_lead["manual-0"] == pytest.approx(lift)
    assert with_lead["other-2"] == pytest.approx(without_lead["other-2"])  # its first chunk is no candidate


def test_passages_of_the_documents_found_are_ranked_on_their_own_scores() -> None:
    # The manual's lead and best chunk lift all its chunks: as documents it comes first, but
    # its third chunk matches worse than the other document's fifth.
    dense = [hit("manual", 0, 0.9), hit("other", 5, 0.7), hit("manual", 3, 0.6), hit("other", 0, 0.2)]
    keyword = [hit("manual", 0, 8.0), hit("other", 5, 6.0), hit("manual", 3, 5.0), hit("other", 0, 1.0)]
    as_documents = order(fuse(dense, keyword, frozenset(), title_terms, TITLED))
    assert as_documents.index("manual-3") < as_documents.index("other-5")
    passages = fuse(dense, keyword, frozenset(title_terms("manual")), title_terms, passage_ranking(TITLED))
    assert order(passages) == ["manual-0", "other-5", "manual-3", "other-0"]
    own = {h.id: h.score for h in fuse(dense, keyword, frozenset(), title_terms,
                                       RankingConfig(aggregate_documents=False, lead_weight=0.0))}
    assert {h.id: h.score for h in passages} == pytest.approx(own)


def test_a_title_match_outranks_a_body_mention_when_the_title_field_is_on() -> None:
    body = hit("notes", 0, 0.8, title="backup-notes.txt")  # mentions rsync in its text: first by BM25 and dense
    page = hit("page", 0, 0.7, title="rsync(1)")
    other = hit("other", 0, 0.2, title="tar(1)")
    dense, keyword = [body, page, other], [hit("notes", 0, 6.0), hit("page", 0, 5.0, title="rsync(1)")]
    query = terms("rsync")
    assert order(fuse(dense, keyword, query, title_terms))[0] == "notes-0"
    assert order(fuse(dense, keyword, query, title_terms, TITLED))[0] == "page-0"


def test_stemmed_title_terms_match_and_stopwords_do_not() -> None:
    assert terms("mounting filesystems") & title_terms("mount(8)")
    assert not terms("what is the") & title_terms("the-what(7)")
    assert title_words("systemd.exec(5)") == "systemd exec 5"


def test_one_list_alone_and_equal_scores() -> None:
    only_dense = fuse([hit("a", 0, 0.7), hit("b", 0, 0.7)], [], frozenset(), title_terms, NO_LEAD)
    assert [h.score for h in only_dense] == pytest.approx([0.6, 0.6])
    assert order(only_dense) == ["a-0", "b-0"]  # equal scores: by document id, deterministic
    assert fuse([], [], frozenset(), title_terms) == []


def test_bad_configurations_are_refused() -> None:
    with pytest.raises(ValueError):
        RankingConfig(fusion="sum")
    with pytest.raises(ValueError):
        RankingConfig(dense_weight=1.5)
    with pytest.raises(ValueError):
        RankingConfig(title_weight=-1)
    with pytest.raises(ValueError):
        RankingConfig(lead_weight=-0.1)


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
    after = await search_service(store, embedder, TITLED).search(Access(USER), query, top_k=3)
    assert before.hits[0].document_id == "Backup notes"  # the store's own fusion: BM25 favours the short note
    assert after.hits[0].document_id == "rsync(1)"
    assert {h.document_id for h in after.hits} >= {"Backup notes", "rsync(1)"}


async def test_min_score_still_filters_dense_matches_only(store, embedder) -> None:
    service = search_service(store, embedder, TITLED)
    strict = await service.search(Access(USER), "rsync", top_k=4, min_score=0.99)
    # No chunk is that close by cosine: only BM25 matches (the two that say rsync) remain.
    assert {h.document_id for h in strict.hits} == {"Backup notes", "rsync(1)"}
    assert strict.hits[0].document_id == "rsync(1)"


async def test_every_store_gives_the_same_default_ranking(store, embedder) -> None:
    service = search_service(store, embedder, DEFAULT_RANKING)
    result = await service.search(Access(USER), "copy files to a remote machine", top_k=4)
    titles = [h.document_id for h in result.hits]
    assert titles[:2] == ["rsync(1)", "Backup notes"]
    assert set(titles) == {"rsync(1)", "Backup notes", "Tea", "Bridges"}
    # First by score, not by the tie-break on document_id ("Backup notes" would sort first).
    assert result.hits[0].score > result.hits[1].score
