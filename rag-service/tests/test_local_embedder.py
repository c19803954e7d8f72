"""LocalEmbedder on the default settings: ONNX Runtime on the real all-MiniLM-L6-v2 weights,
loaded once per session."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import numpy as np
import pytest

from prometheus_client import REGISTRY

from rag_service.config import Settings
from rag_service.providers.local_embedder import LocalEmbedder


@pytest.fixture(scope="session")
def local_embedder(tmp_path_factory) -> LocalEmbedder:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"), embedding_batch_size=4)
    return LocalEmbedder(settings)


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b))


async def test_vectors_are_384_d_and_unit_length(local_embedder):
    vectors = await local_embedder.embed(["The cat sat on the mat.", "Quarterly revenue grew 12%."])
    assert local_embedder.model_name == "all-MiniLM-L6-v2"
    assert local_embedder.dimension == 384
    assert [len(v) for v in vectors] == [384, 384]
    for v in vectors:
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
        assert all(isinstance(x, float) for x in v[:5])


async def test_similar_sentences_are_closer_than_unrelated_ones(local_embedder):
    query, paraphrase, unrelated = await local_embedder.embed(
        [
            "How do I reset my password?",
            "Steps to change a forgotten account password.",
            "The Pacific Ocean is the largest ocean on Earth.",
        ],
        task="query",
    )
    assert cos(query, paraphrase) > cos(query, unrelated) + 0.3


async def test_batches_keep_input_order(local_embedder):
    # batch_size is 4: ten texts take three batches; each vector must match its own text.
    texts = [f"Document number {i} talks about topic {'alpha beta gamma delta epsilon'.split()[i % 5]}." for i in range(10)]
    together = await local_embedder.embed(texts)
    one_by_one = [(await local_embedder.embed([t]))[0] for t in texts]
    for a, b in zip(together, one_by_one, strict=True):
        assert cos(a, b) == pytest.approx(1.0, abs=1e-4)
    assert cos(together[0], together[1]) < 0.999


async def test_query_and_document_tasks_embed_the_same_way(local_embedder):
    [doc] = await local_embedder.embed(["symmetric model"], task="document")
    [query] = await local_embedder.embed(["symmetric model"], task="query")
    assert cos(doc, query) == pytest.approx(1.0, abs=1e-5)


async def test_empty_list_gives_empty_list(local_embedder):
    assert await local_embedder.embed([]) == []


async def test_concurrent_calls_are_all_answered(local_embedder):
    texts = [f"concurrent request {i}" for i in range(6)]
    results = await asyncio.gather(*(local_embedder.embed([t]) for t in texts))
    assert [len(r) for r in results] == [1] * 6
    expected = await local_embedder.embed(texts)
    for [got], want in zip(results, expected, strict=True):
        assert cos(got, want) == pytest.approx(1.0, abs=1e-4)


def test_count_tokens_uses_the_model_tokenizer(local_embedder):
    assert local_embedder.count_tokens("") == 0
    assert local_embedder.count_tokens("hello world") == 2
    # WordPiece splits rare words into several pieces.
    assert local_embedder.count_tokens("tokenization") > 1
    # No truncation: the shipped tokenizer.json truncates at 128, counts must not.
    assert local_embedder.count_tokens("word " * 1000) == 1000


def test_exposes_the_tokenizer_for_the_chunker(local_embedder):
    tokenizer = local_embedder.hf_tokenizer()
    encoding = tokenizer.encode("Hello, World!", add_special_tokens=False)
    assert encoding.tokens == ["hello", ",", "world", "!"]
    assert local_embedder.max_tokens == 256
    assert local_embedder.tokenizer_path.name == "tokenizer.json" and local_embedder.tokenizer_path.exists()


def test_second_instance_reuses_the_loaded_model(local_embedder, tmp_path):
    other = LocalEmbedder(Settings(data_dir=tmp_path))
    assert other.backend.session is local_embedder.backend.session


def test_the_default_encoder_is_onnx_and_serves_without_torch(local_embedder, tmp_path):
    """The default settings (the graph already in the session's model cache): a process
    that builds the embedder and encodes never imports torch (~6 s and ~300 MB saved)."""
    assert local_embedder.backend.backend == "onnx"
    assert local_embedder.backend.onnx_path.name == "model-fp32.onnx"
    script = ("import sys; from rag_service.config import Settings; "
              "from rag_service.providers.local_embedder import LocalEmbedder; "
              "e = LocalEmbedder(Settings(_env_file=None, data_dir=sys.argv[1])); e.backend.encode(['a query'], 'query'); "
              "print(e.backend.backend, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "EMBEDDING_BACKEND"}
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.stdout.split() == ["onnx", "False"], result.stderr[-3000:]


def test_queries_and_ingestion_batches_get_their_own_thread_counts():
    import torch

    from rag_service.providers.minilm_backends import TorchMiniLM
    from rag_service.providers.tokenizer import minilm_model_dir

    backend = TorchMiniLM(minilm_model_dir(), threads=2, query_threads=1)
    before = torch.get_num_threads()
    try:
        backend.encode(["a query"], "query")
        assert torch.get_num_threads() == 1
        backend.encode(["a chunk", "another chunk"], "document")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def encoded_texts() -> float:
    """Texts the local encoder has encoded so far (the service's own counter)."""
    return REGISTRY.get_sample_value("rag_embedded_texts_total", {"provider": "local"}) or 0.0


async def test_a_query_embedded_again_is_not_encoded_again(local_embedder):
    # The chat embeds its question for retrieval, then again beside the answer's passages.
    [question] = await local_embedder.embed(["which file lists the network services"], task="query")
    before = encoded_texts()
    again, passage = await local_embedder.embed(
        ["which file lists the network services", "/etc/services: the Internet network services list"], task="query")
    assert encoded_texts() - before == 1  # the passage only
    assert again == question
    again.append(0.0)  # a caller changing its copy changes no one else's
    assert (await local_embedder.embed(["which file lists the network services"], task="query"))[0] == question
    [fresh] = await local_embedder.embed(["/etc/services: the Internet network services list"], task="document")
    assert cos(passage, fresh) == pytest.approx(1.0, abs=1e-5)


async def test_documents_are_always_encoded(local_embedder):
    before = encoded_texts()
    await local_embedder.embed(["a chunk stored twice"], task="document")
    await local_embedder.embed(["a chunk stored twice"], task="document")
    assert encoded_texts() - before == 2


async def test_kept_query_vectors_are_bounded_and_concurrent_calls_get_their_own(tmp_path):
    embedder = LocalEmbedder(Settings(data_dir=tmp_path, embedding_batch_size=4), query_cache_size=2)
    try:
        texts = [f"query number {i}" for i in range(6)]
        expected = await embedder.embed(texts, task="document")
        # Concurrent calls sharing texts, each dropping the others' from the two kept.
        calls = [[texts[i], texts[(i + 1) % 6], texts[(i + 3) % 6]] for i in range(6)] * 3
        results = await asyncio.gather(*(embedder.embed(call, task="query") for call in calls))
        for call, vectors in zip(calls, results, strict=True):
            for text, vector in zip(call, vectors, strict=True):
                assert cos(vector, expected[texts.index(text)]) == pytest.approx(1.0, abs=1e-5)
        await embedder.embed(texts[:3], task="query")
        before = encoded_texts()
        await embedder.embed(texts[:3], task="query")  # two of three kept
        assert encoded_texts() - before == 1
    finally:
        await embedder.aclose()
