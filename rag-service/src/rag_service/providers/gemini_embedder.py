"""Gemini embeddings (`gemini-embedding-001` by default) through google-genai."""

from __future__ import annotations

import math

from google.genai import types
from tokenizers import Tokenizer

from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy, call_with_retries
from rag_service.errors import ProviderUnavailable
from rag_service.metrics import EMBEDDED_TEXTS
from rag_service.providers.base import EmbedTask
from rag_service.providers.gemini_common import build_gemini_client, gemini_failures
from rag_service.providers.tokenizer import count_tokens_with, minilm_model_dir, minilm_tokenizer

PROVIDER = "Gemini embeddings"
FAILURES = gemini_failures(PROVIDER)
# batchEmbedContents accepts at most 100 requests per call.
MAX_TEXTS_PER_REQUEST = 100
TASK_TYPES: dict[EmbedTask, str] = {"document": "RETRIEVAL_DOCUMENT", "query": "RETRIEVAL_QUERY"}


class GeminiEmbedder:
    """Unit-length Gemini vectors of `settings.gemini_embedding_dimension` dimensions.

    Gemini only returns normalized vectors at the full 3072 dimensions, so smaller
    (Matryoshka-truncated) outputs are L2-normalized here: cosine = dot product.
    """

    # Gemini accepts 2048 tokens per text. Its tokenizer is not available offline, so token
    # counts use the MiniLM WordPiece tokenizer: close enough to size chunks.
    max_tokens = 2048

    def __init__(self, settings: Settings, *, retry_policy: RetryPolicy | None = None) -> None:
        if not settings.gemini_api_key:
            raise ValueError("GeminiEmbedder needs GEMINI_API_KEY")
        self.model_name = settings.gemini_embedding_model
        self.dimension = settings.gemini_embedding_dimension
        self.tokenizer_path = minilm_model_dir() / "tokenizer.json"
        self._client = build_gemini_client(settings.gemini_api_key, settings.gemini_timeout_seconds)
        self._retry_policy = retry_policy or RetryPolicy(max_retries=settings.gemini_max_retries)

    def hf_tokenizer(self) -> Tokenizer:
        return minilm_tokenizer()

    def count_tokens(self, text: str) -> int:
        return count_tokens_with(minilm_tokenizer(), text)

    async def embed(self, texts: list[str], task: EmbedTask = "document") -> list[list[float]]:
        vectors: list[list[float]] = []
        # Sequential batches: order is kept, and one ingestion cannot burst the quota.
        for start in range(0, len(texts), MAX_TEXTS_PER_REQUEST):
            batch = texts[start : start + MAX_TEXTS_PER_REQUEST]
            vectors.extend(await self._embed_batch(batch, TASK_TYPES[task]))
            EMBEDDED_TEXTS.labels(provider="gemini").inc(len(batch))
        return vectors

    async def _embed_batch(self, batch: list[str], task_type: str) -> list[list[float]]:
        config = types.EmbedContentConfig(task_type=task_type, output_dimensionality=self.dimension)

        async def request() -> types.EmbedContentResponse:
            return await self._client.aio.models.embed_content(
                model=self.model_name, contents=batch, config=config
            )

        response = await call_with_retries(request, FAILURES, self._retry_policy)
        return [self._checked_unit_vector(e) for e in self._checked_embeddings(response, len(batch))]

    def _checked_embeddings(self, response: types.EmbedContentResponse, expected: int) -> list[list[float]]:
        embeddings = response.embeddings or []
        if len(embeddings) != expected:
            raise ProviderUnavailable(
                PROVIDER, f"malformed response: {len(embeddings)} embeddings for {expected} texts"
            )
        values = [e.values for e in embeddings]
        if any(v is None for v in values):
            raise ProviderUnavailable(PROVIDER, "malformed response: an embedding has no values")
        return values  # type: ignore[return-value]

    def _checked_unit_vector(self, values: list[float]) -> list[float]:
        if len(values) != self.dimension:
            raise ProviderUnavailable(
                PROVIDER, f"malformed response: vector of {len(values)} dimensions, expected {self.dimension}"
            )
        norm = math.sqrt(math.fsum(v * v for v in values))
        if not math.isfinite(norm) or norm == 0.0:
            raise ProviderUnavailable(PROVIDER, "malformed response: zero or non-finite vector")
        return [v / norm for v in values]

    async def aclose(self) -> None:
        await self._client.aio.aclose()
