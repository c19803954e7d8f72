"""Pick the embedder and the answer generator named by the settings.

Imports are inside the branches: the Gemini SDK is not loaded unless it is used, and the
MiniLM weights are not loaded when Gemini embeds.
"""

from __future__ import annotations

from rag_service.config import Settings
from rag_service.providers.base import Embedder, Generator


def build_embedder(settings: Settings) -> Embedder:
    """`local` MiniLM (default), `gemini` (when GEMINI_API_KEY is set, or forced) or `openai`
    (an OpenAI-compatible embeddings server, only when EMBEDDING_PROVIDER=openai)."""
    provider = settings.resolved_embedding_provider
    if provider == "openai":
        from rag_service.providers.openai_embedder import OpenAIEmbedder

        return OpenAIEmbedder(settings)
    if provider == "gemini":
        from rag_service.providers.gemini_embedder import GeminiEmbedder

        return GeminiEmbedder(settings)
    from rag_service.providers.local_embedder import LocalEmbedder

    return LocalEmbedder(settings)


def build_generator(settings: Settings, embedder: Embedder) -> Generator:
    """`extractive` (default: it compares meanings with `embedder`), `gemini` or `openai`."""
    provider = settings.resolved_llm_provider
    if provider == "gemini":
        from rag_service.providers.gemini_generator import GeminiGenerator

        return GeminiGenerator(settings)
    if provider == "openai":
        from rag_service.providers.openai_generator import OpenAIGenerator

        return OpenAIGenerator(settings)
    from rag_service.providers.extractive import ExtractiveGenerator

    return ExtractiveGenerator(embedder)
