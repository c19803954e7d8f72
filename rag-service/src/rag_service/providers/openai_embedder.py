"""Embeddings from any OpenAI-compatible `POST /embeddings` server (OpenAI, Ollama, Text
Embeddings Inference, vLLM, llama.cpp...).

Plain httpx, no SDK: any server that speaks the protocol works, and respx stands in for it
in tests. The request is `{"model", "input": [texts], "encoding_format": "float"}` (plus
`dimensions` when OPENAI_EMBEDDING_SEND_DIMENSIONS asks for a shortened Matryoshka output);
the answer is `{"data": [{"index", "embedding": [floats]}, ...]}`, put back in input order
by `index`. Every vector is checked against OPENAI_EMBEDDING_DIMENSION and L2-normalized,
so cosine = dot product whatever the server returns.
"""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
from tokenizers import Tokenizer

from rag_service.config import Settings
from rag_service.core.retry import RetryPolicy, call_with_retries, parse_retry_after
from rag_service.metrics import EMBEDDED_TEXTS
from rag_service.providers.base import EmbedTask
from rag_service.providers.openai_common import UpstreamStatusError, error_detail, openai_failures
from rag_service.providers.tokenizer import count_tokens_with, minilm_tokenizer

PROVIDER = "OpenAI-compatible embeddings"


class MalformedEmbeddings(Exception):
    """The answer did not follow the embeddings format."""


FAILURES = openai_failures(PROVIDER, MalformedEmbeddings)


class OpenAIEmbedder:
    """Unit-length vectors of `settings.openai_embedding_dimension` dimensions from an
    OpenAI-compatible server; `model_name` and `dimension` name the collection, so a new
    model or dimension is a new vector space (fill it with `rag reindex`)."""

    def __init__(self, settings: Settings, *, retry_policy: RetryPolicy | None = None) -> None:
        if not settings.openai_embedding_model:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_EMBEDDING_MODEL")
        if settings.openai_embedding_dimension <= 0:
            raise ValueError("EMBEDDING_PROVIDER=openai needs OPENAI_EMBEDDING_DIMENSION (the model's output size)")
        self.model_name = settings.openai_embedding_model
        self.dimension = settings.openai_embedding_dimension
        # The server's input window; chunks are sized with the MiniLM tokenizer (a proxy:
        # the server's own tokenizer is not available offline).
        self.max_tokens = settings.openai_embedding_max_tokens
        self.url = settings.openai_embedding_base_url.rstrip("/") + "/embeddings"
        self.batch_size = settings.openai_embedding_batch_size
        self.send_dimensions = settings.openai_embedding_send_dimensions
        self.prefixes: dict[EmbedTask, str] = {
            "query": settings.openai_embedding_query_prefix,
            "document": settings.openai_embedding_document_prefix,
        }
        headers = {"Accept": "application/json"}
        if settings.openai_embedding_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_embedding_api_key}"
        timeout = httpx.Timeout(settings.openai_embedding_timeout_seconds,
                                connect=min(settings.openai_embedding_timeout_seconds, 10.0))
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._retry_policy = retry_policy or RetryPolicy(max_retries=settings.openai_embedding_max_retries)

    def hf_tokenizer(self) -> Tokenizer:
        return minilm_tokenizer()

    def count_tokens(self, text: str) -> int:
        return count_tokens_with(minilm_tokenizer(), text)

    async def embed(self, texts: list[str], task: EmbedTask = "document") -> list[list[float]]:
        prefix = self.prefixes[task]
        vectors: list[list[float]] = []
        # Sequential batches: order is kept, and one ingestion cannot flood the server.
        for start in range(0, len(texts), self.batch_size):
            batch = [prefix + text for text in texts[start : start + self.batch_size]]

            async def request(batch: list[str] = batch) -> list[list[float]]:
                return await self._embed_batch(batch)

            vectors.extend(await call_with_retries(request, FAILURES, self._retry_policy))
            EMBEDDED_TEXTS.labels(provider="openai").inc(len(batch))
        return vectors

    async def _embed_batch(self, batch: list[str]) -> list[list[float]]:
        payload: dict[str, Any] = {"model": self.model_name, "input": batch, "encoding_format": "float"}
        if self.send_dimensions:
            payload["dimensions"] = self.dimension
        response = await self._client.post(self.url, json=payload)
        if response.status_code != 200:
            raise UpstreamStatusError(response.status_code, error_detail(response.content),
                                       parse_retry_after(response.headers.get("retry-after")))
        try:
            body = response.json()
        except (ValueError, json.JSONDecodeError) as exc:
            raise MalformedEmbeddings("malformed response: not JSON") from exc
        return [self._unit_vector(values) for values in self._ordered_embeddings(body, len(batch))]

    @staticmethod
    def _ordered_embeddings(body: Any, expected: int) -> list[Any]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            count = len(data) if isinstance(data, list) else 0
            raise MalformedEmbeddings(f"malformed response: {count} embeddings for {expected} texts")
        by_index: dict[int, Any] = {}
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise MalformedEmbeddings("malformed response: an item is not an object")
            index = item.get("index", position)
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < expected or index in by_index:
                raise MalformedEmbeddings("malformed response: missing, repeated or out-of-range indexes")
            by_index[index] = item.get("embedding")
        return [by_index[i] for i in range(expected)]

    def _unit_vector(self, values: Any) -> list[float]:
        if isinstance(values, str):
            raise MalformedEmbeddings("malformed response: base64 embedding (the server ignored encoding_format)")
        if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values
        ):
            raise MalformedEmbeddings("malformed response: an embedding is not a list of numbers")
        if len(values) != self.dimension:
            raise MalformedEmbeddings(
                f"malformed response: vector of {len(values)} dimensions, expected {self.dimension} "
                "(set OPENAI_EMBEDDING_DIMENSION to the model's output size)"
            )
        norm = math.sqrt(math.fsum(float(v) * float(v) for v in values))
        if not math.isfinite(norm) or norm == 0.0:
            raise MalformedEmbeddings("malformed response: zero or non-finite vector")
        return [float(v) / norm for v in values]

    async def aclose(self) -> None:
        await self._client.aclose()

