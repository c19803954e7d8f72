"""Raw LocalEmbedder throughput: ~1000 chunks of ~200 tokens, printed as chunks/s.

Run: .venv/bin/python bench/embedder_throughput.py [--chunks 1000] [--tokens 200]
Figures depend on the machine (and its neighbours); nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import torch

from rag_service.config import Settings
from rag_service.providers.local_embedder import LocalEmbedder

WORDS = (
    "the service stores documents and splits them into chunks that are embedded and indexed so that "
    "users can search their private files with hybrid queries and receive answers with citations "
    "revenue grew during the quarter while costs of infrastructure fell after migration to servers "
    "password reset instructions describe how an account owner verifies email before changing access"
).split()


def make_chunk(rng: random.Random, embedder: LocalEmbedder, tokens: int) -> str:
    words: list[str] = []
    while embedder.count_tokens(" ".join(words)) < tokens:
        words.extend(rng.choices(WORDS, k=10))
    return " ".join(words)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    started = time.perf_counter()
    embedder = LocalEmbedder(Settings(embedding_batch_size=args.batch_size))
    print(f"model load: {time.perf_counter() - started:.1f} s; torch threads: {torch.get_num_threads()}")

    rng = random.Random(7)
    texts = [make_chunk(rng, embedder, args.tokens) for _ in range(args.chunks)]
    mean_tokens = statistics.mean(embedder.count_tokens(t) for t in texts)
    await embedder.embed(texts[:8])  # warm-up

    started = time.perf_counter()
    vectors = await embedder.embed(texts)
    elapsed = time.perf_counter() - started
    assert len(vectors) == len(texts)
    print(
        f"{len(texts)} chunks x {mean_tokens:.0f} tokens, batch {args.batch_size}: "
        f"{elapsed:.1f} s -> {len(texts) / elapsed:.0f} chunks/s"
    )

    started = time.perf_counter()
    query_vectors = [await embedder.embed([f"query {i} about revenue"], task="query") for i in range(50)]
    per_query_ms = (time.perf_counter() - started) / len(query_vectors) * 1000
    print(f"single short query embedding: {per_query_ms:.1f} ms")
    await embedder.aclose()


if __name__ == "__main__":
    asyncio.run(main())
