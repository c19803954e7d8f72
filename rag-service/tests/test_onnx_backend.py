"""ONNX Runtime backend (the default): exported from the packaged weights into a model
cache, vectors checked against torch's on the same texts (the real model on both sides).

This module exports into caches of its own (not the session's shared MODEL_CACHE_DIR):
the export itself is under test, by two real processes starting at once.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rag_service.config import Settings
from rag_service.errors import ProviderUnavailable
from rag_service.providers import onnx_export
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.providers.minilm_backends import TorchMiniLM
from rag_service.providers.onnx_export import (
    MIN_COSINE,
    digest_path,
    ensure_onnx_model,
    file_sha256,
    onnx_path,
    verified,
)
from rag_service.providers.tokenizer import minilm_model_dir

MODEL = "all-MiniLM-L6-v2"
TEXTS = [
    "How do I reset my password?",
    "grep -rn 'TODO' src/ | wc -l",
    "The rag-service verifies JWTs against the auth-service JWKS, cached and kid-rotation aware. " * 8,
    "Die Katze sitzt auf der Matte.",
    "a",
    "Quarterly revenue grew 12% while infrastructure costs fell after the migration to new servers.",
]

# One process at start-up: export (or wait for) the fp32 graph, print where it is.
EXPORT = textwrap.dedent("""
    import logging, sys
    from pathlib import Path
    from rag_service.providers.onnx_export import ensure_onnx_model
    from rag_service.providers.tokenizer import minilm_model_dir
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    print(ensure_onnx_model(Path(sys.argv[1]), minilm_model_dir(), "all-MiniLM-L6-v2", "fp32"))
""")


def cache_settings(models_dir, **overrides) -> Settings:
    return Settings(_env_file=None, data_dir=models_dir.parent / "data", model_cache_dir=models_dir, **overrides)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx") / "models"


@pytest.fixture(scope="module")
def two_starts(models_dir) -> list[subprocess.CompletedProcess]:
    """Two processes exporting into the same empty cache at the same time."""
    processes = [subprocess.Popen([sys.executable, "-c", EXPORT, str(models_dir)], env=dict(os.environ),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)  # a liveness bound on two busy cores
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return np.asarray(TorchMiniLM(minilm_model_dir(), threads=1).encode(TEXTS))


def test_two_processes_starting_at_once_export_one_graph(two_starts, models_dir):
    for result in two_starts:
        assert result.returncode == 0, result.stderr[-3000:]
    graph = onnx_path(models_dir, MODEL, minilm_model_dir(), "fp32")
    assert {result.stdout.strip() for result in two_starts} == {str(graph)}
    # One exported (saying so, and how long it took); the other waited for it and reused it.
    logs = [result.stderr for result in two_starts]
    assert sum("exporting all-MiniLM-L6-v2 to ONNX fp32" in log for log in logs) == 1, logs
    assert sum("exported all-MiniLM-L6-v2 to ONNX fp32 in" in log for log in logs) == 1, logs
    # Nothing half-written is left beside the graph and its hash, which anyone may read.
    assert sorted(p.name for p in graph.parent.iterdir()) == [".export-fp32.lock", "model-fp32.onnx",
                                                              "model-fp32.onnx.sha256"]
    assert graph.stat().st_mode & 0o044 == 0o044 and digest_path(graph).stat().st_mode & 0o044 == 0o044
    assert verified(graph)


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
async def test_onnx_vectors_match_torch_per_text(two_starts, models_dir, torch_vectors, backend):
    embedder = LocalEmbedder(cache_settings(models_dir, embedding_backend=backend, embedding_batch_size=4))
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


async def test_a_cached_graph_is_reused_not_exported_again(two_starts, models_dir):
    graph = onnx_path(models_dir, MODEL, minilm_model_dir(), "fp32")
    written = graph.stat().st_mtime_ns
    first = LocalEmbedder(cache_settings(models_dir))
    again = LocalEmbedder(cache_settings(models_dir))
    try:
        assert graph.stat().st_mtime_ns == written
        assert again.backend.onnx_path == graph
        # One ONNX Runtime session per process and graph, as torch loads its model once.
        assert again.backend.session is first.backend.session
    finally:
        await first.aclose()
        await again.aclose()


def test_a_graph_that_fails_the_check_never_takes_the_final_name(two_starts, models_dir, tmp_path, monkeypatch):
    # int8 misses a stricter bar than 0.99 (its worst text is ~0.997 from torch's vector).
    other = tmp_path / "models"
    fp32 = onnx_path(other, MODEL, minilm_model_dir(), "fp32")
    fp32.parent.mkdir(parents=True)
    source = onnx_path(models_dir, MODEL, minilm_model_dir(), "fp32")
    shutil.copyfile(source, fp32)
    shutil.copyfile(digest_path(source), digest_path(fp32))
    monkeypatch.setattr(onnx_export, "MIN_COSINE", 0.9999)
    with pytest.raises(RuntimeError, match="disagrees with torch"):
        ensure_onnx_model(other, minilm_model_dir(), MODEL, "int8")
    assert sorted(p.name for p in fp32.parent.iterdir() if not p.name.startswith(".")) == [
        "model-fp32.onnx", "model-fp32.onnx.sha256"]


def test_a_tampered_graph_is_rejected_and_exported_again(two_starts, models_dir, tmp_path):
    other = tmp_path / "models"
    graph = onnx_path(other, MODEL, minilm_model_dir(), "fp32")
    graph.parent.mkdir(parents=True)
    source = onnx_path(models_dir, MODEL, minilm_model_dir(), "fp32")
    shutil.copyfile(source, graph)
    shutil.copyfile(digest_path(source), digest_path(graph))
    assert verified(graph)
    # Changed after the export: a byte flipped in the middle of the weights.
    tampered = bytearray(graph.read_bytes())
    tampered[len(tampered) // 2] ^= 0xFF
    graph.write_bytes(bytes(tampered))
    assert not verified(graph)
    assert ensure_onnx_model(other, minilm_model_dir(), MODEL, "fp32") == graph
    assert verified(graph) and graph.read_bytes() != bytes(tampered)
    assert digest_path(graph).read_text().strip() == file_sha256(graph)
    # A graph without its hash (e.g. copied in by hand) is not trusted either.
    digest_path(graph).unlink()
    assert not verified(graph)


def test_the_cache_folder_is_keyed_by_the_exporter_and_runtime_versions(monkeypatch, tmp_path):
    before = onnx_path(tmp_path, MODEL, minilm_model_dir(), "fp32").parent
    for package in ("onnxruntime", "torch", "onnx", "transformers"):
        with monkeypatch.context() as patched:
            real = importlib.metadata.version
            patched.setattr(importlib.metadata, "version",
                            lambda name, p=package: "0.0-other" if name == p else real(name))
            assert onnx_path(tmp_path, MODEL, minilm_model_dir(), "fp32").parent != before, package
    assert onnx_path(tmp_path, MODEL, minilm_model_dir(), "fp32").parent == before


def test_the_cache_folder_names_the_weights_it_was_exported_from(tmp_path):
    model_dir = minilm_model_dir()
    copy = tmp_path / "model"
    copy.mkdir()
    shutil.copyfile(model_dir / "config.json", copy / "config.json")
    (copy / "model.safetensors").write_bytes(b"\0" * 16)
    assert onnx_path(tmp_path, MODEL, copy, "fp32").parent != onnx_path(tmp_path, MODEL, model_dir, "fp32").parent


async def test_a_corrupt_graph_makes_the_embedder_unavailable(tmp_path):
    # Corrupt with a matching hash (as a broken export would leave it): ONNX Runtime refuses it.
    graph = onnx_path(tmp_path / "models", MODEL, minilm_model_dir(), "fp32")
    graph.parent.mkdir(parents=True)
    graph.write_bytes(b"not an onnx graph")
    digest_path(graph).write_text(file_sha256(graph))
    with pytest.raises(ProviderUnavailable, match="cannot load"):
        LocalEmbedder(cache_settings(tmp_path / "models"))


def test_models_go_into_the_data_dir_unless_a_cache_is_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_CACHE_DIR", "")  # e.g. a compose `${VAR:-}`: unset, not the working directory
    assert Settings(_env_file=None, data_dir=tmp_path).models_dir == tmp_path / "models"
    shared = tmp_path / "shared"
    assert Settings(_env_file=None, data_dir=tmp_path, model_cache_dir=shared).models_dir == shared


def test_onnx_fp32_is_the_default_and_torch_stays_selectable(monkeypatch):
    monkeypatch.delenv("EMBEDDING_BACKEND", raising=False)
    assert Settings(_env_file=None).embedding_backend == "onnx"
    assert Settings(_env_file=None, embedding_backend="torch").embedding_backend == "torch"


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="embedding_backend"):
        Settings(embedding_backend="tensorrt")
