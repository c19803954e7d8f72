"""Ingestion throughput: the full pipeline vs the raw embedder, in chunks per second.

    .venv/bin/python bench/ingest_throughput.py [--docs 300] [--concurrency 1] [--rounds 2]

1. Loads N man pages from the manpages-dev corpus and chunks them once (the exact texts
   the pipeline embeds: "title\\n\\nchunk").
2. Raw: `embedder.embed` on those texts, in calls of the pipeline's batch size (256).
3. Pipeline: `DocumentService.save` for every document (a new session per document, as
   per request) into SQLite + Qdrant Edge in a temporary folder: validation, hashing,
   SQL insert/commit, chunking, embedding, BM25, upserts, status update.
Raw and pipeline alternate for `--rounds` rounds (the machine is shared and noisy); the
ratio uses the best round of each. Target: pipeline >= 85% of raw.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path

from rag_service.config import Settings
from rag_service.documents.service import INGEST_BATCH, DocumentService
from rag_service.providers.local_embedder import LocalEmbedder
from rag_service.storage.db import create_engine_and_sessionmaker, run_migrations
from rag_service.storage.qdrant_edge import EdgeVectorStore
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import tenant_filter

CORPUS = Path("/work/shared/datasets/manpages-dev/corpus.jsonl")


def load_documents(n: int) -> list[dict]:
    with CORPUS.open() as lines:
        return [json.loads(line) for _, line in zip(range(n), lines)]


async def raw_round(embedder: LocalEmbedder, texts: list[str]) -> float:
    started = time.perf_counter()
    for start in range(0, len(texts), INGEST_BATCH):
        await embedder.embed(texts[start : start + INGEST_BATCH], task="document")
    return time.perf_counter() - started


async def pipeline_round(settings: Settings, embedder: LocalEmbedder, documents: list[dict],
                         concurrency: int, data_dir: Path) -> tuple[float, int, int]:
    engine, sessionmaker = create_engine_and_sessionmaker(settings)
    store = EdgeVectorStore(data_dir / f"qdrant-{uuid.uuid4().hex[:6]}", collection="bench", dimension=embedder.dimension)
    await store.ensure_collection()
    sparse = SparseEncoder()
    user = f"bench-{uuid.uuid4().hex[:8]}"
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for document in documents:
        queue.put_nowait(document)
    chunks = 0

    async def worker() -> None:
        nonlocal chunks
        while not queue.empty():
            document = queue.get_nowait()
            async with sessionmaker() as session:
                service = DocumentService(session, store, sparse, embedder, settings)
                saved, _ = await service.save(user, document["title"], document["text"], {"source": "manpages"})
                chunks += saved.chunk_count

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    stored = await store.count(tenant_filter(user))
    await store.close()
    await engine.dispose()
    return elapsed, chunks, stored


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=1, help="documents saved at once")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    settings = Settings(_env_file=None, data_dir=data_dir, database_url=None, qdrant_url=None,
                        embedding_provider="local", gemini_api_key=None)
    run_migrations(settings)
    embedder = LocalEmbedder(settings)
    documents = load_documents(args.docs)

    probe = DocumentService(None, None, None, embedder, settings)  # only its chunker is used
    chunker = probe.chunker
    started = time.perf_counter()
    texts: list[str] = []
    for document in documents:
        content = probe.prepare_content(document["text"])
        title = chunker.clip_title(document["title"])
        texts += [chunker.embedding_text(title, c.text) for c in chunker.split(content)]
    chunk_seconds = time.perf_counter() - started
    await embedder.embed(texts[:64])  # warm-up (first call allocates)
    print(f"{len(documents)} documents, {len(texts)} chunks, chunking alone {len(texts) / chunk_seconds:,.0f} chunks/s")

    raw_rates, pipeline_rates = [], []
    for round_number in range(1, args.rounds + 1):
        raw_seconds = await raw_round(embedder, texts)
        raw_rates.append(len(texts) / raw_seconds)
        seconds, chunks, stored = await pipeline_round(settings, embedder, documents, args.concurrency, data_dir)
        assert chunks == stored == len(texts), (chunks, stored, len(texts))
        pipeline_rates.append(chunks / seconds)
        print(f"round {round_number}: raw embedder {raw_rates[-1]:.1f} chunks/s ({raw_seconds:.1f} s), "
              f"pipeline {pipeline_rates[-1]:.1f} chunks/s ({seconds:.1f} s, {len(documents) / seconds:.1f} docs/s)")
    best_raw, best_pipeline = max(raw_rates), max(pipeline_rates)
    print(f"best: raw {best_raw:.1f} chunks/s, pipeline {best_pipeline:.1f} chunks/s, "
          f"ratio {best_pipeline / best_raw:.0%} (target >= 85%)")


if __name__ == "__main__":
    asyncio.run(main())
