"""Choose the vector store from the settings (VECTOR_STORE): embedded Qdrant Edge by default,
the Qdrant server when QDRANT_URL is set, pgvector in DATABASE_URL's Postgres on request."""

from __future__ import annotations

import re

from qdrant_client import AsyncQdrantClient

from rag_service.config import Settings
from rag_service.storage.edge_process import EdgeProcessStore
from rag_service.storage.pgvector import PgVectorStore
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.qdrant_server import ServerVectorStore
from rag_service.storage.vectors import VectorStore

# Per request to the Qdrant server; a slow server becomes a 503, not a hung request.


def collection_name(prefix: str, model_name: str, dimension: int) -> str:
    """E.g. ("chunks", "sentence-transformers/all-MiniLM-L6-v2", 384) -> "chunks__all-minilm-l6-v2__384".

    The name records the embedding space, so switching model or dimension starts a new
    collection instead of mixing incomparable vectors.
    """
    model = model_name.rstrip("/").rsplit("/", 1)[-1]
    parts = [_safe(prefix), _safe(model), str(int(dimension))]
    if not parts[0] or not parts[1] or dimension <= 0:
        raise ValueError(f"cannot name a collection from {prefix!r}, {model_name!r}, {dimension!r}")
    return "__".join(parts)


def _safe(text: str) -> str:
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")


def build_vector_store(settings: Settings, model_name: str, dimension: int) -> VectorStore:
    name = collection_name(settings.qdrant_collection_prefix, model_name, dimension)
    kind = settings.resolved_vector_store
    if kind == "edge":
        store = EdgeProcessStore if settings.qdrant_edge_process else EdgeVectorStore
        return store(settings.data_dir / "qdrant" / name, collection=name, dimension=dimension)
    if kind == "pgvector":
        if not settings.database_url:
            raise ValueError("VECTOR_STORE=pgvector needs DATABASE_URL")
        return PgVectorStore(settings.database_url, collection=name, dimension=dimension,
                             pool_max_size=settings.pgvector_pool_max_size,
                             timeout=settings.pgvector_pool_timeout_seconds,
                             statement_timeout_ms=settings.pgvector_statement_timeout_ms)
    client = AsyncQdrantClient(
        url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=settings.qdrant_timeout_seconds
    )
    return ServerVectorStore(client, collection=name, dimension=dimension)
