"""ONNX Runtime backend: exported from the packaged weights into the data dir, vectors
checked against torch's on the same texts (the real model on both sides)."""

from __future__ import annotations

import numpy as np
import pytest

from rag_service.config import Settings
from rag_service.providers.base import ProviderUnavailable
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.providers.minilm_backends import TorchMiniLM
from rag_service.providers.onnx_export import MIN_COSINE, onnx_path
from rag_service.providers.tokenizer import minilm_model_dir

TEXTS = [
    "How do I reset my password?",
    "grep -rn 'TODO' src/ | wc -l",
    "The rag-service verifies JWTs against the auth-service JWKS, cached and kid-rotation aware. " * 8,
    "Die Katze sitzt auf der Matte.",
    "a",
    "Quarterly revenue grew 12% while infrastructure costs fell after the migration to new servers.",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-data")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return np.asarray(TorchMiniLM(minilm_model_dir(), threads=1).encode(TEXTS))


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
async def test_onnx_vectors_match_torch_per_text(data_dir, torch_vectors, backend):
    embedder = LocalEmbedder(Settings(data_dir=data_dir, embedding_backend=backend, embedding_batch_size=4))
    try:
        vectors = np.asarray(await embedder.embed(TEXTS))
        [query] = await embedder.embed([TEXTS[0]], task="query")
    finally:
        await embedder.aclose()
    assert embedder.backend.backend == "onnx"
    assert vectors.shape == (len(TEXTS), 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    cosines = np.sum(vectors * torch_vectors, axis=1)
    assert cosines.min() >= MIN_COSINE, cosines
    if backend == "onnx":  # same float graph: equal up to rounding, alone or in a batch
        assert cosines.min() > 0.9999
        np.testing.assert_allclose(query, vectors[0], atol=1e-5)
    else:  # activations are quantized per call: a text's batch-mates move it a little
        assert float(np.dot(query, vectors[0])) >= MIN_COSINE


async def test_the_export_is_written_once_into_the_data_dir(data_dir):
    LocalEmbedder(Settings(data_dir=data_dir, embedding_backend="onnx"))
    graph = onnx_path(data_dir, "all-MiniLM-L6-v2", "fp32")
    written = graph.stat().st_mtime_ns
    again = LocalEmbedder(Settings(data_dir=data_dir, embedding_backend="onnx"))
    assert graph.stat().st_mtime_ns == written
    assert again.backend.onnx_path == graph
    # No temporary file is left beside the graphs.
    assert sorted(p.name for p in graph.parent.iterdir()) == ["model-fp32.onnx", "model-int8.onnx"]


async def test_a_corrupt_graph_makes_the_embedder_unavailable(tmp_path):
    graph = onnx_path(tmp_path, "all-MiniLM-L6-v2", "fp32")
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"not an onnx graph")
    with pytest.raises(ProviderUnavailable, match="cannot load"):
        LocalEmbedder(Settings(data_dir=tmp_path, embedding_backend="onnx"))


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="embedding_backend"):
        Settings(embedding_backend="tensorrt")
