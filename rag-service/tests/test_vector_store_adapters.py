"""What each vector store adapter does beyond the shared contract: Edge's persistence and
single-writer lock, the Qdrant server adapter's 503 when unreachable, pgvector's 503 and
concurrent start-up, and the factory's choice from the settings."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path

import psycopg
import pytest
from qdrant_client import AsyncQdrantClient

from rag_service.config import Settings
from rag_service.errors import ServiceUnavailable
from rag_service.storage.access import Access, access_filter
from rag_service.storage.factory import build_vector_store, collection_name
from rag_service.storage.filters import sql_filter
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.edge_process import EdgeProcessStore
from rag_service.storage.qdrant_edge import EdgeVectorStore, edge_filter
from rag_service.storage.qdrant_server import ServerVectorStore, server_filter
from rag_service.storage.vectors import ChunkFilter
from vector_store_support import A1_KERNEL, ALICE, ALL_POINTS, BOB, DIM, chunk, query, unit

# A client pointed at a closed port cannot check the server version.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


# --- Edge only ----------------------------------------------------------------------------


async def test_edge_data_survives_close_and_reopen(tmp_path: Path):
    path = tmp_path / "shard"
    first = EdgeVectorStore(path, collection="c", dimension=DIM)
    await first.ensure_collection()
    await first.upsert(ALL_POINTS)
    await first.delete(access_filter(Access(ALICE), document_ids=["doc-a2"]))
    await first.close()

    reopened = EdgeVectorStore(path, collection="c", dimension=DIM)
    await reopened.ensure_collection()
    try:
        assert await reopened.count(access_filter(Access(ALICE))) == 2
        assert await reopened.count(access_filter(Access(BOB))) == 1
        hits = await reopened.search(query("kernel scheduler", unit(1)), access_filter(Access(ALICE)), 5, "hybrid")
        assert hits[0].id == A1_KERNEL.id
        assert await reopened.optimize() in (True, False)
        assert (await reopened.search(query("", unit(1)), access_filter(Access(ALICE)), 1, "dense"))[0].id == A1_KERNEL.id
    finally:
        await reopened.close()


async def test_edge_concurrent_writes_and_reads(tmp_path: Path):
    """Writers queue on the single-writer lock while searches keep running inline; a delete
    queued behind its upsert (while the other writers and the searches run) removes all of it."""
    store = EdgeVectorStore(tmp_path / "shard", collection="c", dimension=DIM)
    await store.ensure_collection()
    batches = [[chunk(f"user-{b}", f"doc-{b}", i, f"note {i} about kernels", unit(1, b, i)) for i in range(200)]
               for b in range(5)]
    try:
        searches = [store.search(query("kernel", unit(1)), access_filter(Access("user-0")), 5, "hybrid") for _ in range(20)]

        async def upsert_then_delete() -> None:
            await store.upsert(batches[4])
            await store.delete(access_filter(Access("user-4"), document_ids=["doc-4"]))

        await asyncio.gather(*(store.upsert(batch) for batch in batches[:4]), upsert_then_delete(), *searches)
        counts = [await store.count(access_filter(Access(f"user-{b}"))) for b in range(5)]
        assert counts == [200] * 4 + [0]
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
            await store.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3)
        with pytest.raises(ServiceUnavailable):
            await store.upsert([A1_KERNEL])
        with pytest.raises(ServiceUnavailable):
            await store.ensure_collection()
        with pytest.raises(ServiceUnavailable):
            await store.count(access_filter(Access(ALICE)))
        with pytest.raises(ServiceUnavailable):
            await store.delete(access_filter(Access(ALICE)))
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
    # Qdrant Edge in a child process by default (QDRANT_EDGE_PROCESS), in this one on request.
    assert isinstance(edge, EdgeProcessStore)
    assert edge.path == tmp_path / "qdrant" / "chunks__all-minilm-l6-v2__8"
    await edge.ensure_collection()
    assert await edge.healthy()
    await edge.close()
    in_process = build_vector_store(Settings(data_dir=tmp_path, qdrant_edge_process=False), "all-MiniLM-L6-v2", DIM)
    assert isinstance(in_process, EdgeVectorStore)
    assert in_process.path == edge.path
    await in_process.ensure_collection()
    assert await in_process.healthy()
    await in_process.close()

    server = build_vector_store(
        Settings(data_dir=tmp_path, qdrant_url=f"http://127.0.0.1:{closed_port()}"), "all-MiniLM-L6-v2", DIM
    )
    assert isinstance(server, ServerVectorStore)
    assert server.collection == "chunks__all-minilm-l6-v2__8"
    assert await server.healthy() is False
    await server.close()


# --- pgvector only ------------------------------------------------------------------------


@pytest.fixture
async def pg_store(pgvector_url: str):
    store = PgVectorStore(pgvector_url, collection=f"adapter_{uuid.uuid4().hex[:12]}", dimension=DIM)
    await store.ensure_collection()
    yield store
    await store.close()


@pytest.mark.postgres
async def test_pgvector_unreachable_is_unhealthy_and_503():
    store = PgVectorStore(f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing", collection="c", dimension=DIM,
                          timeout=1)
    try:
        assert await store.healthy() is False
        with pytest.raises(ServiceUnavailable):
            await store.ensure_collection()
        with pytest.raises(ServiceUnavailable):
            await store.search(query("kernel", unit(1)), access_filter(Access(ALICE)), limit=3)
        with pytest.raises(ServiceUnavailable):
            await store.upsert([A1_KERNEL])
        with pytest.raises(ServiceUnavailable):
            await store.count(access_filter(Access(ALICE)))
        with pytest.raises(ServiceUnavailable):
            await store.delete(access_filter(Access(ALICE)))
    finally:
        await store.close()


@pytest.mark.postgres
async def test_pgvector_replicas_create_one_table_together_and_share_it(pgvector_url: str):
    """Replicas start at once: every ensure_collection succeeds, and all see one table."""
    collection = f"replicas_{uuid.uuid4().hex[:12]}"
    replicas = [PgVectorStore(pgvector_url, collection=collection, dimension=DIM) for _ in range(4)]
    try:
        await asyncio.gather(*(replica.ensure_collection() for replica in replicas))
        await replicas[0].upsert(ALL_POINTS)
        counts = [await replica.count(access_filter(Access(ALICE))) for replica in replicas]
        assert counts == [3, 3, 3, 3]
        await replicas[1].delete(access_filter(Access(BOB)))
        assert await replicas[2].count(access_filter(Access(BOB))) == 0
    finally:
        for replica in replicas:
            await replica.close()


@pytest.mark.postgres
async def test_pgvector_dense_search_finds_a_small_tenant_among_a_crowd(pg_store):
    """Other tenants' chunks nearer the query must not crowd a user's own out of the HNSW
    candidates: Alice's 5 chunks are all found behind 1500 of Bob's closer ones."""
    crowd = [chunk(BOB, "doc-crowd", i, f"crowd note {i}", unit(1, 0.001 * i)) for i in range(1500)]
    mine = [chunk(ALICE, "doc-mine", i, f"my note {i}", unit(0, 1, i)) for i in range(5)]
    await pg_store.upsert(crowd + mine)
    for mode in ("dense", "hybrid"):
        hits = await pg_store.search(query("note", unit(1)), access_filter(Access(ALICE)), limit=5, mode=mode)
        assert {hit.id for hit in hits} == {point.id for point in mine}, mode


@pytest.mark.postgres
async def test_pgvector_upsert_is_all_or_nothing(pg_store):
    """A batch that fails part-way (here a vector of the wrong dimension, past the first
    batch statement) leaves none of its chunks behind."""
    good = [chunk(ALICE, "doc-big", i, f"note {i}", unit(1, i)) for i in range(300)]
    bad = chunk(ALICE, "doc-big", 300, "broken", [1.0] * (DIM + 1))
    with pytest.raises(psycopg.errors.DataException):
        await pg_store.upsert([*good, bad])
    assert await pg_store.count(access_filter(Access(ALICE))) == 0


def test_settings_need_the_chosen_stores_server(tmp_path: Path):
    assert Settings(data_dir=tmp_path).resolved_vector_store == "edge"
    assert Settings(data_dir=tmp_path, qdrant_url="http://q:6333").resolved_vector_store == "qdrant"
    assert Settings(data_dir=tmp_path, qdrant_url="http://q:6333", vector_store="edge").resolved_vector_store == "edge"
    with pytest.raises(ValueError, match="VECTOR_STORE=pgvector needs DATABASE_URL"):
        Settings(data_dir=tmp_path, vector_store="pgvector")
    with pytest.raises(ValueError, match="VECTOR_STORE=qdrant needs QDRANT_URL"):
        Settings(data_dir=tmp_path, vector_store="qdrant")


def test_factory_picks_pgvector_on_request(tmp_path: Path):
    settings = Settings(data_dir=tmp_path, vector_store="pgvector",
                        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/nothing")
    store = build_vector_store(settings, "all-MiniLM-L6-v2", DIM)
    assert isinstance(store, PgVectorStore)
    assert store.collection == "chunks__all-minilm-l6-v2__8"


@pytest.mark.parametrize("translate", [edge_filter, server_filter, sql_filter], ids=["edge", "qdrant", "pgvector"])
def test_every_filter_translation_refuses_a_filter_without_owners(translate) -> None:
    # A real check in each adapter (not an assert, which `python -O` strips): an unscoped
    # filter would read every tenant's chunks. Only one document's bookkeeping filter
    # (`access.document_points`) has no owners.
    for unscoped in (ChunkFilter(owners=()), ChunkFilter(owners=(), document_ids=("a", "b")),
                     ChunkFilter(owners=("",)), ChunkFilter(owners=("alice", ""), document_ids=("doc",))):
        with pytest.raises(ValueError, match="owners"):
            translate(unscoped)
    translate(ChunkFilter(owners=(), document_ids=("doc",)))
