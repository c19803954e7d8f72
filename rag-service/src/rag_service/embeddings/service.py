"""`/embed`: the query embedding of a caller's text, from the configured embedder.

The same vector a search computes for its query (task "query"); the caller's documents are
not involved, so it needs no session and no store.
"""

from __future__ import annotations

from rag_service.config import Settings
from rag_service.errors import PayloadTooLarge, Unprocessable
from rag_service.providers.base import Embedder


class EmbeddingService:
    def __init__(self, embedder: Embedder, settings: Settings) -> None:
        self._embedder = embedder
        self._settings = settings

    async def embed_query(self, text: str) -> list[float]:
        """The query embedding of `text` (1..max_embed_chars characters)."""
        if not text or not text.strip():
            raise Unprocessable("text must not be empty")
        if len(text) > self._settings.max_embed_chars:
            raise PayloadTooLarge(f"text is longer than the limit of {self._settings.max_embed_chars} characters")
        [vector] = await self._embedder.embed([text], task="query")
        return vector
