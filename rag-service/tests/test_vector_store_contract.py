"""One behaviour contract for both vector stores: Qdrant Edge (in a tmp dir) and the
Qdrant server adapter (over qdrant-client's in-memory local mode, which speaks the
server API). Dense vectors are small and hand-made; sparse vectors are real BM25.
"""

from __future__ import annotations

import asyncio
import math
import socket
import uuid
from pathlib import Path

import pytest
from qdrant_client import AsyncQdrantClient

from rag_service.config import Settings
from rag_service.errors import BadRequest, ServiceUnavailable
from rag_service.storage.factory import build_vector_store, collection_name
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import ChunkPoint, QueryVectors, SparseVector, tenant_filter

# Known, harmless warnings of qdrant-client: local mode ignores payload indexes; a client
# pointed at a closed port cannot check the server version.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect in the local Qdrant"),
    pytest.mark.filterwarnings("ignore:Failed to obtain server version"),
]

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
        user_id=user,
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


@pytest.fixture(params=["edge", "server"])
async def store(request, tmp_path: Path):
    if request.param == "edge":
        vector_store = EdgeVectorStore(tmp_path / "shard", collection="contract", dimension=DIM)
    else:
        vector_store = ServerVectorStore(AsyncQdrantClient(location=":memory:"), collection="contract", dimension=DIM)
    await vector_store.ensure_collection()
    yield vector_store
    await vector_store.close()


@pytest.fixture
async def filled(store):
    await store.upsert(ALL_POINTS)
    return store


def ids(hits) -> set[str]:
    return {hit.id for hit in hits}


async def test_empty_collection_returns_nothing(store):
    for mode in MODES:
        assert await store.search(query("kernel", unit(1)), tenant_filter(ALICE), limit=5, mode=mode) == []
    assert await store.count(tenant_filter(ALICE)) == 0


async def test_upsert_count_and_payload_round_trip(filled):
    assert await filled.count(tenant_filter(ALICE)) == 3
    assert await filled.count(tenant_filter(BOB)) == 1
    assert await filled.count(tenant_filter(ALICE, document_ids=["doc-a1"])) == 2
    # Upserting the same id again replaces the point instead of adding one.
    await filled.upsert([A1_KERNEL])
    assert await filled.count(tenant_filter(ALICE)) == 3

    [hit] = await filled.search(query("", unit(1)), tenant_filter(ALICE), limit=1, mode="dense")
    assert hit.id == A1_KERNEL.id
    assert (hit.document_id, hit.chunk_index, hit.text, hit.title) == ("doc-a1", 0, A1_KERNEL.text, "doc-a1 title")
    assert (hit.start, hit.end) == (A1_KERNEL.start, A1_KERNEL.end)
    assert hit.metadata == {"lang": "en", "year": 2020, "draft": False, "rating": 4.5}
    assert hit.score == pytest.approx(1.0, abs=1e-4)


async def test_dense_search_ranks_by_cosine(filled):
    hits = await filled.search(query("", unit(1, 0.2)), tenant_filter(ALICE), limit=3, mode="dense")
    assert [h.id for h in hits] == [A1_KERNEL.id, A1_MEMORY.id, A2_ZEBRA.id]
    assert hits[0].score > hits[1].score > hits[2].score


async def test_keyword_search_matches_terms_with_stemming(filled):
    hits = await filled.search(query("zebras", unit(1)), tenant_filter(ALICE), limit=5, mode="keyword")
    assert [h.id for h in hits] == [A2_ZEBRA.id]
    hits = await filled.search(query("swapping pages", unit(1)), tenant_filter(ALICE), limit=5, mode="keyword")
    assert [h.id for h in hits] == [A1_MEMORY.id]
    assert await filled.search(query("giraffe", unit(1)), tenant_filter(ALICE), limit=5, mode="keyword") == []


async def test_query_without_terms(filled):
    """Stopwords only: keyword search finds nothing, hybrid falls back to the dense side."""
    no_terms = query("the of and", unit(0, 0, 1))
    assert no_terms.sparse.indices == []
    assert await filled.search(no_terms, tenant_filter(ALICE), limit=5, mode="keyword") == []
    hits = await filled.search(no_terms, tenant_filter(ALICE), limit=5, mode="hybrid")
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
    where = tenant_filter(user)

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
        hits = await filled.search(q, tenant_filter(BOB), limit=10, mode=mode)
        assert not ids(hits) & alice_ids
        # Naming Alice's documents narrows Bob's search to nothing; it never widens it.
        hits = await filled.search(q, tenant_filter(BOB, document_ids=["doc-a1", "doc-a2"]), limit=10, mode=mode)
        assert hits == []
        # Metadata values shared with Alice's chunks only select Bob's own chunks.
        hits = await filled.search(q, tenant_filter(BOB, metadata={"lang": ["en", "fr"]}), limit=10, mode=mode)
        assert ids(hits) <= {B1_KERNEL.id}
    assert await filled.count(tenant_filter(BOB, document_ids=["doc-a1"])) == 0


async def test_keyword_scores_use_only_the_users_own_statistics(filled):
    """IDF comes from the searching user's chunks: Bob flooding the collection with a term
    changes neither Alice's keyword scores nor what she could infer from them."""
    q = query("kernel scheduler", unit(1))
    before = {h.id: h.score for h in await filled.search(q, tenant_filter(ALICE), limit=5, mode="keyword")}
    flood = [chunk(BOB, "doc-b2", i, f"kernel kernel scheduler note {i}", unit(0, 1)) for i in range(30)]
    await filled.upsert(flood)
    after = {h.id: h.score for h in await filled.search(q, tenant_filter(ALICE), limit=5, mode="keyword")}
    assert set(before) == {A1_KERNEL.id, A1_MEMORY.id}
    assert after == pytest.approx(before)


async def test_user_b_cannot_delete_user_a_points(filled):
    await filled.delete(tenant_filter(BOB, document_ids=["doc-a1", "doc-a2"]))
    await filled.delete(tenant_filter(BOB, metadata={"lang": ["en", "fr"]}))
    assert await filled.count(tenant_filter(ALICE)) == 3
    assert await filled.count(tenant_filter(BOB)) == 0


@pytest.mark.parametrize("mode", MODES)
async def test_filters_only_narrow(filled, mode):
    q = query("kernel zebra memory", unit(1, 1, 1))
    # Every Alice chunk matches this query in every mode, so the filter alone decides.
    assert ids(await filled.search(q, tenant_filter(ALICE), limit=10, mode=mode)) == ids(ALICE_POINTS)
    cases = {
        "doc-a2 only": (tenant_filter(ALICE, document_ids=["doc-a2"]), {A2_ZEBRA.id}),
        "lang=en": (tenant_filter(ALICE, metadata={"lang": ["en"]}), {A1_KERNEL.id, A1_MEMORY.id}),
        "year=2020": (tenant_filter(ALICE, metadata={"year": [2020]}), {A1_KERNEL.id, A2_ZEBRA.id}),
        "draft=True": (tenant_filter(ALICE, metadata={"draft": [True]}), {A1_MEMORY.id}),
        "draft=False": (tenant_filter(ALICE, metadata={"draft": [False]}), {A1_KERNEL.id, A2_ZEBRA.id}),
        "rating=3.0": (tenant_filter(ALICE, metadata={"rating": [3.0]}), {A1_MEMORY.id}),
        "mixed value types, two keys": (
            tenant_filter(ALICE, metadata={"lang": ["fr", 2021], "year": [2020, 2021]}), {A2_ZEBRA.id}),
        "doc-a1 and lang=fr": (tenant_filter(ALICE, document_ids=["doc-a1"], metadata={"lang": ["fr"]}), set()),
        "no accepted values": (tenant_filter(ALICE, metadata={"lang": []}), set()),
        "missing field": (tenant_filter(ALICE, metadata={"nope": ["en"]}), set()),
    }
    for name, (where, allowed) in cases.items():
        assert ids(await filled.search(q, where, limit=10, mode=mode)) == allowed, name
        assert await filled.count(where) == len(allowed), name


def test_metadata_filter_keys_must_be_plain_names():
    for key in ["", "a b", "x[]", 'a"b', "user_id\x00", "../user_id", "a..b", "k" * 65]:
        with pytest.raises(BadRequest):
            tenant_filter(ALICE, metadata={key: ["v"]})
    tenant_filter(ALICE, metadata={"source.kind": ["web"], "tag_2-x": ["v"]})


async def test_delete_by_document_removes_exactly_its_chunks(filled):
    await filled.delete(tenant_filter(ALICE, document_ids=["doc-a1"]))
    assert await filled.count(tenant_filter(ALICE, document_ids=["doc-a1"])) == 0
    assert await filled.count(tenant_filter(ALICE, document_ids=["doc-a2"])) == 1
    assert await filled.count(tenant_filter(BOB)) == 1
    for mode in MODES:
        hits = await filled.search(query("kernel memory zebra", unit(1, 1, 1)), tenant_filter(ALICE), 10, mode)
        assert ids(hits) <= {A2_ZEBRA.id}


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
async def test_dense_score_threshold_drops_weak_matches(filled, mode):
    no_terms = QueryVectors(dense=unit(1), sparse=SparseVector([], []))
    # cos(e0, e0) = 1, cos(e0, (e0+e1)/sqrt2) ~ 0.707, cos(e0, e2) = 0
    hits = await filled.search(no_terms, tenant_filter(ALICE), limit=10, mode=mode, dense_score_threshold=0.9)
    assert ids(hits) == {A1_KERNEL.id}
    hits = await filled.search(no_terms, tenant_filter(ALICE), limit=10, mode=mode, dense_score_threshold=0.5)
    assert ids(hits) == {A1_KERNEL.id, A1_MEMORY.id}
    hits = await filled.search(no_terms, tenant_filter(ALICE), limit=10, mode=mode)
    assert ids(hits) == ids(ALICE_POINTS)


async def test_keyword_side_of_hybrid_ignores_dense_threshold(filled):
    q = query("zebra", unit(1))  # the zebra chunk is orthogonal to the dense query
    hits = await filled.search(q, tenant_filter(ALICE), limit=10, mode="hybrid", dense_score_threshold=0.9)
    assert ids(hits) == {A1_KERNEL.id, A2_ZEBRA.id}


async def test_limit_is_respected(filled):
    q = query("kernel memory zebra", unit(1, 1, 1))
    for mode in MODES:
        assert len(await filled.search(q, tenant_filter(ALICE), limit=1, mode=mode)) == 1
        assert len(await filled.search(q, tenant_filter(ALICE), limit=2, mode=mode)) == 2
        assert await filled.search(q, tenant_filter(ALICE), limit=0, mode=mode) == []


async def test_ensure_collection_is_idempotent(filled):
    await filled.ensure_collection()
    await filled.ensure_collection()
    assert await filled.count(tenant_filter(ALICE)) == 3
    assert await filled.healthy()


async def test_unknown_mode_is_rejected(filled):
    with pytest.raises(ValueError):
        await filled.search(query("kernel", unit(1)), tenant_filter(ALICE), limit=3, mode="fuzzy")  # type: ignore[arg-type]


# --- Edge only ----------------------------------------------------------------------------


async def test_edge_data_survives_close_and_reopen(tmp_path: Path):
    path = tmp_path / "shard"
    first = EdgeVectorStore(path, collection="c", dimension=DIM)
    await first.ensure_collection()
    await first.upsert(ALL_POINTS)
    await first.delete(tenant_filter(ALICE, document_ids=["doc-a2"]))
    await first.close()

    reopened = EdgeVectorStore(path, collection="c", dimension=DIM)
    await reopened.ensure_collection()
    try:
        assert await reopened.count(tenant_filter(ALICE)) == 2
        assert await reopened.count(tenant_filter(BOB)) == 1
        hits = await reopened.search(query("kernel scheduler", unit(1)), tenant_filter(ALICE), 5, "hybrid")
        assert hits[0].id == A1_KERNEL.id
        assert await reopened.optimize() in (True, False)
        assert (await reopened.search(query("", unit(1)), tenant_filter(ALICE), 1, "dense"))[0].id == A1_KERNEL.id
    finally:
        await reopened.close()


async def test_edge_concurrent_writes_and_reads(tmp_path: Path):
    """Writers queue on the single-writer lock while searches keep running inline."""
    store = EdgeVectorStore(tmp_path / "shard", collection="c", dimension=DIM)
    await store.ensure_collection()
    batches = [[chunk(f"user-{b}", f"doc-{b}", i, f"note {i} about kernels", unit(1, b, i)) for i in range(200)]
               for b in range(5)]
    try:
        searches = [store.search(query("kernel", unit(1)), tenant_filter("user-0"), 5, "hybrid") for _ in range(20)]
        await asyncio.gather(*(store.upsert(batch) for batch in batches), *searches,
                             store.delete(tenant_filter("user-4", document_ids=["doc-4"])))
        counts = [await store.count(tenant_filter(f"user-{b}")) for b in range(5)]
        assert counts[:4] == [200] * 4
        assert counts[4] in (0, 200)  # the delete ran before or after that upsert, never halfway
    finally:
        await store.close()


async def test_edge_refuses_a_shard_of_another_dimension(tmp_path: Path):
    path = tmp_path / "shard"
    store = EdgeVectorStore(path, collection="c", dimension=DIM)
    await store.ensure_collection()
    await store.close()
    other = EdgeVectorStore(path, collection="c", dimension=DIM * 2)
    with pytest.raises(ServiceUnavailable):
        await other.ensure_collection()
    assert not await other.healthy()


# --- Server only --------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_server_unreachable_is_unhealthy_and_503():
    client = AsyncQdrantClient(url=f"http://127.0.0.1:{closed_port()}", timeout=2, check_compatibility=False)
    store = ServerVectorStore(client, collection="c", dimension=DIM)
    try:
        assert await store.healthy() is False
        with pytest.raises(ServiceUnavailable):
            await store.search(query("kernel", unit(1)), tenant_filter(ALICE), limit=3)
        with pytest.raises(ServiceUnavailable):
            await store.upsert([A1_KERNEL])
        with pytest.raises(ServiceUnavailable):
            await store.ensure_collection()
        with pytest.raises(ServiceUnavailable):
            await store.count(tenant_filter(ALICE))
        with pytest.raises(ServiceUnavailable):
            await store.delete(tenant_filter(ALICE))
    finally:
        await store.close()


# --- Factory ------------------------------------------------------------------------------


def test_collection_name_records_model_and_dimension():
    assert collection_name("chunks", "all-MiniLM-L6-v2", 384) == "chunks__all-minilm-l6-v2__384"
    assert collection_name("chunks", "sentence-transformers/all-MiniLM-L6-v2", 384) == "chunks__all-minilm-l6-v2__384"
    assert collection_name("chunks", "models/gemini-embedding-001", 768) == "chunks__gemini-embedding-001__768"
    assert collection_name("My Chunks!", "a b/../c", 3) == "my-chunks__c__3"
    with pytest.raises(ValueError):
        collection_name("chunks", "///", 384)


async def test_factory_picks_edge_by_default_and_server_with_url(tmp_path: Path):
    edge = build_vector_store(Settings(data_dir=tmp_path), "all-MiniLM-L6-v2", DIM)
    assert isinstance(edge, EdgeVectorStore)
    assert edge.path == tmp_path / "qdrant" / "chunks__all-minilm-l6-v2__8"
    await edge.ensure_collection()
    assert await edge.healthy()
    await edge.close()

    server = build_vector_store(
        Settings(data_dir=tmp_path, qdrant_url=f"http://127.0.0.1:{closed_port()}"), "all-MiniLM-L6-v2", DIM
    )
    assert isinstance(server, ServerVectorStore)
    assert server.collection == "chunks__all-minilm-l6-v2__8"
    assert await server.healthy() is False
    await server.close()
