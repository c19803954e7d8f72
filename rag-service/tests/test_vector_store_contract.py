"""One behaviour contract for every vector store: Qdrant Edge (in a tmp dir, in this process
and in a child process behind `EdgeProcessStore`, the default), pgvector (a
table on the embedded PostgreSQL 18 + pgvector server, TEST_PGVECTOR_URL) and the Qdrant
server adapter over qdrant-client's in-process local mode (`:memory:`, the params id
`qdrant-local-mode`: the client's own Python implementation, no server and no HTTP; it
ignores payload indexes). The adapter's HTTP behaviour is tested in test_qdrant_server_http.py.
Dense vectors are small and hand-made; sparse vectors are real BM25.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from rag_service.errors import BadRequest
from rag_service.storage.access import Access, access_filter, owner_points
from rag_service.storage.edge_process import EdgeProcessStore
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.vectors import QueryVectors, SparseVector
from vector_store_support import (
    A1_KERNEL,
    A1_MEMORY,
    A2_ZEBRA,
    ALICE,
    ALICE_POINTS,
    ALL_POINTS,
    B1_KERNEL,
    BOB,
    DIM,
    ENCODER,
    MODES,
    chunk,
    ids,
    query,
    unit,
)

# Known, harmless warning of qdrant-client: local mode ignores payload indexes.
pytestmark = pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant")


@pytest.fixture(params=["edge", "edge-process", "qdrant-local-mode",
                        pytest.param("pgvector", marks=pytest.mark.postgres)])
async def store(request, tmp_path: Path):
    if request.param == "edge":
        vector_store = EdgeVectorStore(tmp_path / "shard", collection="contract", dimension=DIM)
    elif request.param == "edge-process":
        vector_store = EdgeProcessStore(tmp_path / "shard", collection="contract", dimension=DIM)
    elif request.param == "pgvector":
        url = request.getfixturevalue("pgvector_url")
        vector_store = PgVectorStore(url, collection=f"contract_{uuid.uuid4().hex[:12]}", dimension=DIM)
    else:
        vector_store = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="contract", dimension=DIM)
    await vector_store.ensure_collection()
    yield vector_store
    await vector_store.close()


@pytest.fixture
async def filled(store):
    await store.upsert(ALL_POINTS)
    return store


async def test_empty_collection_returns_nothing(store):
    for mode in MODES:
        assert await store.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=5, mode=mode) == []
    assert await store.count(access_filter(Access(ALICE))) == 0


async def test_upsert_count_and_payload_round_trip(filled):
    assert await filled.count(access_filter(Access(ALICE))) == 3
    assert await filled.count(access_filter(Access(BOB))) == 1
    assert await filled.count(access_filter(Access(ALICE), document_ids=["doc-a1"])) == 2
    # Upserting the same id again replaces the point instead of adding one.
    await filled.upsert([A1_KERNEL])
    assert await filled.count(access_filter(Access(ALICE))) == 3

    [hit] = await filled.search(query("", unit(1)), access_filter(Access(ALICE)), limit=1, mode="dense")
    assert hit.id == A1_KERNEL.id
    assert (hit.document_id, hit.chunk_index, hit.text, hit.title) == ("doc-a1", 0, A1_KERNEL.text, "doc-a1 title")
    assert (hit.start, hit.end) == (A1_KERNEL.start, A1_KERNEL.end)
    assert hit.metadata == {"lang": "en", "year": 2020, "draft": False, "rating": 4.5}
    assert hit.score == pytest.approx(1.0, abs=1e-4)


async def test_dense_search_ranks_by_cosine(filled):
    hits = await filled.search(query("", unit(1, 0.2)), access_filter(Access(ALICE)), limit=3, mode="dense")
    assert [h.id for h in hits] == [A1_KERNEL.id, A1_MEMORY.id, A2_ZEBRA.id]
    assert hits[0].score > hits[1].score > hits[2].score


async def test_keyword_search_matches_terms_with_stemming(filled):
    hits = await filled.search(query("zebras", unit(1)), access_filter(Access(ALICE)), limit=5, mode="keyword")
    assert [h.id for h in hits] == [A2_ZEBRA.id]
    hits = await filled.search(query("swapping pages", unit(1)), access_filter(Access(ALICE)), limit=5, mode="keyword")
    assert [h.id for h in hits] == [A1_MEMORY.id]
    assert await filled.search(query("giraffe", unit(1)), access_filter(Access(ALICE)), limit=5, mode="keyword") == []


async def test_keyword_search_needs_no_dense_vector(filled):
    """The search service starts its keyword search before the query is embedded."""
    hits = await filled.search(query("swapping pages", []), access_filter(Access(ALICE)), limit=5, mode="keyword")
    assert [h.id for h in hits] == [A1_MEMORY.id]


async def test_query_without_terms(filled):
    """Stopwords only: keyword search finds nothing, hybrid falls back to the dense side."""
    no_terms = query("the of and", unit(0, 0, 1))
    assert no_terms.sparse.indices == []
    assert await filled.search(no_terms, access_filter(Access(ALICE)), limit=5, mode="keyword") == []
    hits = await filled.search(no_terms, access_filter(Access(ALICE)), limit=5, mode="hybrid")
    assert hits[0].id == A2_ZEBRA.id


async def test_hybrid_ranks_a_chunk_good_on_both_sides_first(store):
    user = "user-fusion"
    dense_best = chunk(user, "d", 0, "Pedestrians and traffic lights in the city centre.", unit(1))
    both_second = chunk(user, "d", 1, "The zebra crossing near the old railway station was repainted.", unit(1, 0.5))
    # Last on the dense side: (1st, 8th) loses to (2nd, 2nd) under RRF with k=60.
    keyword_best = chunk(user, "d", 2, "Zebra zebra zebra.", unit(0, 0, 0, 0, 1))
    filler = [chunk(user, "f", i, f"Unrelated note number {i} about gardening.", unit(0.1, 0, 1, i)) for i in range(5)]
    await store.upsert([dense_best, both_second, keyword_best, *filler])
    q = query("zebra", unit(1))
    where = access_filter(Access(user))

    assert (await store.search(q, where, limit=3, mode="dense"))[0].id == dense_best.id
    assert (await store.search(q, where, limit=3, mode="keyword"))[0].id == keyword_best.id
    hybrid = await store.search(q, where, limit=3, mode="hybrid")
    # Second in both lists beats first-in-one-list under reciprocal rank fusion.
    assert hybrid[0].id == both_second.id
    assert ids(hybrid) == {dense_best.id, both_second.id, keyword_best.id}


@pytest.mark.parametrize("mode", MODES)
async def test_user_b_never_sees_user_a(filled, mode):
    alice_ids = ids(ALICE_POINTS)
    # Bob's query is aimed squarely at Alice's chunks: their exact dense vector and words.
    for target in ALICE_POINTS:
        q = QueryVectors(dense=target.dense, sparse=ENCODER.encode_query(target.text))
        hits = await filled.search(q, access_filter(Access(BOB)), limit=10, mode=mode)
        assert not ids(hits) & alice_ids
        # Naming Alice's documents narrows Bob's search to nothing; it never widens it.
        hits = await filled.search(q, access_filter(Access(BOB), document_ids=["doc-a1", "doc-a2"]), limit=10, mode=mode)
        assert hits == []
        # Metadata values shared with Alice's chunks only select Bob's own chunks.
        hits = await filled.search(q, access_filter(Access(BOB), metadata={"lang": ["en", "fr"]}), limit=10, mode=mode)
        assert ids(hits) <= {B1_KERNEL.id}
    assert await filled.count(access_filter(Access(BOB), document_ids=["doc-a1"])) == 0


async def test_keyword_scores_use_only_the_users_own_statistics(filled):
    """IDF comes from the searching user's chunks: Bob flooding the collection with a term
    changes neither Alice's keyword scores nor what she could infer from them."""
    q = query("kernel scheduler", unit(1))
    before = {h.id: h.score for h in await filled.search(q, access_filter(Access(ALICE)), limit=5, mode="keyword")}
    flood = [chunk(BOB, "doc-b2", i, f"kernel kernel scheduler note {i}", unit(0, 1)) for i in range(30)]
    await filled.upsert(flood)
    after = {h.id: h.score for h in await filled.search(q, access_filter(Access(ALICE)), limit=5, mode="keyword")}
    assert set(before) == {A1_KERNEL.id, A1_MEMORY.id}
    assert after == pytest.approx(before)


async def test_user_b_cannot_delete_user_a_points(filled):
    await filled.delete(access_filter(Access(BOB), document_ids=["doc-a1", "doc-a2"]))
    await filled.delete(access_filter(Access(BOB), metadata={"lang": ["en", "fr"]}))
    assert await filled.count(access_filter(Access(ALICE))) == 3
    assert await filled.count(access_filter(Access(BOB))) == 0


@pytest.mark.parametrize("mode", MODES)
async def test_filters_only_narrow(filled, mode):
    q = query("kernel zebra memory", unit(1, 1, 1))
    # Every Alice chunk matches this query in every mode, so the filter alone decides.
    assert ids(await filled.search(q, access_filter(Access(ALICE)), limit=10, mode=mode)) == ids(ALICE_POINTS)
    cases = {
        "doc-a2 only": (access_filter(Access(ALICE), document_ids=["doc-a2"]), {A2_ZEBRA.id}),
        "lang=en": (access_filter(Access(ALICE), metadata={"lang": ["en"]}), {A1_KERNEL.id, A1_MEMORY.id}),
        "year=2020": (access_filter(Access(ALICE), metadata={"year": [2020]}), {A1_KERNEL.id, A2_ZEBRA.id}),
        "draft=True": (access_filter(Access(ALICE), metadata={"draft": [True]}), {A1_MEMORY.id}),
        "draft=False": (access_filter(Access(ALICE), metadata={"draft": [False]}), {A1_KERNEL.id, A2_ZEBRA.id}),
        "rating=3.0": (access_filter(Access(ALICE), metadata={"rating": [3.0]}), {A1_MEMORY.id}),
        "mixed value types, two keys": (
            access_filter(Access(ALICE), metadata={"lang": ["fr", 2021], "year": [2020, 2021]}), {A2_ZEBRA.id}),
        "doc-a1 and lang=fr": (access_filter(Access(ALICE), document_ids=["doc-a1"], metadata={"lang": ["fr"]}), set()),
        "no accepted values": (access_filter(Access(ALICE), metadata={"lang": []}), set()),
        "missing field": (access_filter(Access(ALICE), metadata={"nope": ["en"]}), set()),
    }
    for name, (where, allowed) in cases.items():
        assert ids(await filled.search(q, where, limit=10, mode=mode)) == allowed, name
        assert await filled.count(where) == len(allowed), name


def test_metadata_filter_keys_must_be_plain_names():
    for key in ["", "a b", "x[]", 'a"b', "user_id\x00", "../user_id", "a..b", "k" * 65]:
        with pytest.raises(BadRequest):
            access_filter(Access(ALICE), metadata={key: ["v"]})
    access_filter(Access(ALICE), metadata={"source.kind": ["web"], "tag_2-x": ["v"]})


async def test_delete_by_document_removes_exactly_its_chunks(filled):
    await filled.delete(access_filter(Access(ALICE), document_ids=["doc-a1"]))
    assert await filled.count(access_filter(Access(ALICE), document_ids=["doc-a1"])) == 0
    assert await filled.count(access_filter(Access(ALICE), document_ids=["doc-a2"])) == 1
    assert await filled.count(access_filter(Access(BOB))) == 1
    for mode in MODES:
        hits = await filled.search(query("kernel memory zebra", unit(1, 1, 1)), access_filter(Access(ALICE)), 10, mode)
        assert ids(hits) <= {A2_ZEBRA.id}


async def test_deleting_an_owners_points_erases_every_one_of_them_and_nothing_else(filled):
    """What the erasure of a deleted account does (accounts/erasure.py): every point carrying
    the owner key goes, whatever its document or collection; other owners keep theirs, and
    keyword search still works for them (pgvector's per-owner BM25 counts stay right)."""
    await filled.delete(owner_points(ALICE))
    assert await filled.count(owner_points(ALICE)) == 0
    assert await filled.count(access_filter(Access(ALICE))) == 0
    assert await filled.count(owner_points(BOB)) == 1
    for mode in MODES:
        hits = await filled.search(query("kernel scheduler memory", unit(0, 0, 0, 1)), access_filter(Access(BOB)), 10, mode)
        assert ids(hits) == {B1_KERNEL.id}, mode
    await filled.delete(owner_points(ALICE))  # again: nothing to do, no error


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_dense_score_threshold_drops_weak_matches(filled, mode):
    no_terms = QueryVectors(dense=unit(1), sparse=SparseVector([], []))
    # cos(e0, e0) = 1, cos(e0, (e0+e1)/sqrt2) ~ 0.707, cos(e0, e2) = 0
    hits = await filled.search(no_terms, access_filter(Access(ALICE)), limit=10, mode=mode, dense_score_threshold=0.9)
    assert ids(hits) == {A1_KERNEL.id}
    hits = await filled.search(no_terms, access_filter(Access(ALICE)), limit=10, mode=mode, dense_score_threshold=0.5)
    assert ids(hits) == {A1_KERNEL.id, A1_MEMORY.id}
    hits = await filled.search(no_terms, access_filter(Access(ALICE)), limit=10, mode=mode)
    assert ids(hits) == ids(ALICE_POINTS)


async def test_keyword_side_of_hybrid_ignores_dense_threshold(filled):
    q = query("zebra", unit(1))  # the zebra chunk is orthogonal to the dense query
    hits = await filled.search(q, access_filter(Access(ALICE)), limit=10, mode="hybrid", dense_score_threshold=0.9)
    assert ids(hits) == {A1_KERNEL.id, A2_ZEBRA.id}


async def test_limit_is_respected(filled):
    q = query("kernel memory zebra", unit(1, 1, 1))
    for mode in MODES:
        assert len(await filled.search(q, access_filter(Access(ALICE)), limit=1, mode=mode)) == 1
        assert len(await filled.search(q, access_filter(Access(ALICE)), limit=2, mode=mode)) == 2
        assert await filled.search(q, access_filter(Access(ALICE)), limit=0, mode=mode) == []


async def test_ensure_collection_is_idempotent(filled):
    await filled.ensure_collection()
    await filled.ensure_collection()
    assert await filled.count(access_filter(Access(ALICE))) == 3
    assert await filled.healthy()


async def test_unknown_mode_is_rejected(filled):
    with pytest.raises(ValueError):
        await filled.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3, mode="fuzzy")  # type: ignore[arg-type]
