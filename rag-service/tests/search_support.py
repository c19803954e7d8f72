"""The corpus and fixtures of the SearchService tests (test_search_service.py,
test_search_filters.py): documents saved by DocumentService (SQLite, the real chunker with
small chunks so one document spans several, MiniLM, BM25) into Qdrant Edge in a tmp dir.

The fixtures are module-scoped: each test file that imports them builds its own library.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import pytest_asyncio

from rag_service.config import Settings
from rag_service.documents.service import DocumentService
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.search.service import SearchService
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations

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
