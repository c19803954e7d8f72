"""The service's local embedder (LocalEmbedder) against its own encoder called directly.

    .venv/bin/python bench/embedder_throughput.py [--chunks 1000] [--tokens 200] [--rounds 2]
        [--report PATH]

LocalEmbedder is what ingestion and search call: one worker thread, queries first, documents
in sub-batches of EMBEDDING_BATCH_SIZE. The baseline is the same backend's `encode` called
directly with the same batches, in the same run, alternating round by round: the difference
is what the worker costs. Then one short query at a time through each. Figures depend on the
machine (and its neighbours); nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from pathlib import Path

from rag_service.config import Settings
from rag_service.providers.local_embedder import LocalEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from bench_report import Report, add_report_argument  # noqa: E402

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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=1000)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2, help="each path embeds chunks/rounds texts per round")
    parser.add_argument("--queries", type=int, default=50)
    add_report_argument(parser)
    args = parser.parse_args()

    settings = Settings(_env_file=None)
    report = Report("Local embedder throughput", baseline="the same encoder's `encode` called directly with the "
                    "same batches (no worker thread), alternating round by round in the same run")
    started = time.perf_counter()
    embedder = LocalEmbedder(settings)
    load_seconds = time.perf_counter() - started
    backend = embedder.backend

    rng = random.Random(7)
    texts = [make_chunk(rng, embedder, args.tokens) for _ in range(args.chunks)]
    mean_tokens = statistics.mean(embedder.count_tokens(t) for t in texts)
    await embedder.embed(texts[:8])  # warm-up

    async def through_embedder(batch: list[str]) -> None:
        await embedder.embed(batch)

    async def direct(batch: list[str]) -> None:
        for start in range(0, len(batch), embedder.batch_size):
            backend.encode(batch[start : start + embedder.batch_size], "document")

    seconds = {"encoder called directly (baseline)": 0.0, "LocalEmbedder.embed": 0.0}
    paths = dict(zip(seconds, (direct, through_embedder), strict=True))
    per_round = -(-len(texts) // args.rounds)
    for number, start in enumerate(range(0, len(texts), per_round)):
        names = list(paths) if number % 2 == 0 else list(reversed(paths))
        for name in names:
            began = time.perf_counter()
            await paths[name](texts[start : start + per_round])
            seconds[name] += time.perf_counter() - began

    async def direct_query(query: str) -> None:
        backend.encode([query], "query")

    async def embedder_query(query: str) -> None:
        await embedder.embed([query], task="query")

    query_ms: dict[str, list[float]] = {name: [] for name in seconds}
    for index in range(args.queries):
        for name, call in zip(seconds, (direct_query, embedder_query), strict=True):
            began = time.perf_counter()
            await call(f"query {index} about revenue")
            query_ms[name].append((time.perf_counter() - began) * 1000)
    await embedder.aclose()

    report.text(f"{len(texts):,} synthetic chunks of {mean_tokens:.0f} tokens on average, "
                f"backend `{settings.embedding_backend}`, sub-batches of {embedder.batch_size}, "
                f"{settings.embedding_threads or 'default'} encoder thread(s) for documents; "
                f"model load {load_seconds:.1f} s.")
    baseline_rate = len(texts) / seconds["encoder called directly (baseline)"]
    report.table(
        ["path", "chunks/s", "vs baseline", "one short query p50 ms"],
        [[name, len(texts) / elapsed, f"{len(texts) / elapsed / baseline_rate:.0%}",
          statistics.median(query_ms[name])] for name, elapsed in seconds.items()],
    )
    report.text("How to read it: the baseline is the raw encoder; LocalEmbedder adds the hop to its worker "
                "thread and the queueing that lets queries overtake ingestion. A share near 100% means that "
                "hop costs nothing measurable; chunks/s is the ceiling of ingestion on this machine.")
    report.write(args.report)


if __name__ == "__main__":
    asyncio.run(main())
