"""Chunks for the search benchmarks at 10k-1M chunks, written at store level.

Filling 100k chunks through the service costs about an hour here (MiniLM embeds ~26
chunks/s), so the search benchmarks write the chunks straight into the vector store (and,
for the HTTP benchmark, matching `ready` rows into the SQL documents table), the way
ingestion would have left them:
- texts are real: the first `real` pool texts are the repository's own ~200-token chunks
  (bench_texts.repo_chunks, the product's chunker); the rest of the pool are 80-200 word
  windows of the repository's files. Every chunk carries the BM25 vector of its text.
- dense vectors: the real chunks get their MiniLM vectors (embedded here, same model and
  title prefix as ingestion); every other chunk gets a random unit vector. A filtered
  search is an exact scan of the tenant's points (Edge) or an HNSW walk (pgvector), whose
  cost does not depend on what the vectors mean, and the real ones make the queries (the
  repository's Markdown headings) find real neighbours.
- beyond the pool size chunks reuse pool texts (and their BM25 vectors) cyclically, so a
  million chunks need not be BM25-encoded one by one.
Documents hold CHUNKS_PER_DOCUMENT consecutive chunks; document d belongs to user d % users,
in that user's default personal collection, unless a `Placement` says otherwise (the owner
key and collection of each document: bench/access_filter.py spreads them over organizations).
Nothing outside the repository is read.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np

from bench_texts import repo_chunks, repo_words
from rag_service.documents.indexing import point_id
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.vectors import DEFAULT_COLLECTION, ChunkPoint, SparseVector

DIM = 384
CHUNKS_PER_DOCUMENT = 50
SEPARATOR = "\n\n"

# Document number -> (owner key, collection id) of its chunks.
Placement = Callable[[int], tuple[str, str]]


@dataclass
class Corpus:
    texts: list[str]
    sparse: list[SparseVector]
    # MiniLM vectors of texts[:len(real_vectors)]
    real_vectors: np.ndarray
    seconds_bm25: float
    seconds_embedding: float

    @property
    def real(self) -> int:
        return len(self.real_vectors)


def document_title(document: int) -> str:
    return f"Benchmark document {document}"


def user_of(document: int, users: int) -> str:
    return f"bench-user-{document % users}"


def build_corpus(pool: int, real: int, *, seed: int = 7, embed_threads: int = 0) -> Corpus:
    """`pool` distinct chunk texts with BM25 vectors; the first `real` (at most the repository's
    full-size chunks) also with MiniLM vectors."""
    rng = random.Random(seed)
    reals = repo_chunks(min(real, pool)) if real else []
    words = repo_words()
    texts = list(reals)
    while len(texts) < pool:
        length = rng.randint(80, 200)
        start = rng.randint(0, len(words) - length)
        texts.append(" ".join(words[start : start + length]))
    # BM25 and MiniLM see what ingestion gives them: title, blank line, chunk. The title
    # depends on the document, so the pool is encoded with one representative title.
    started = time.perf_counter()
    sparse = SparseEncoder().encode_documents([f"{document_title(0)}{SEPARATOR}{t}" for t in texts])
    seconds_bm25 = time.perf_counter() - started
    started = time.perf_counter()
    vectors = np.zeros((0, DIM), dtype=np.float32)
    if reals:
        from rag_service.providers.minilm_backends import TorchMiniLM
        from rag_service.providers.tokenizer import minilm_model_dir

        encoder = TorchMiniLM(minilm_model_dir(), threads=embed_threads)
        rows: list[list[float]] = []
        for start in range(0, len(reals), 32):
            rows += encoder.encode([f"{document_title(0)}{SEPARATOR}{t}" for t in reals[start : start + 32]])
        vectors = np.asarray(rows, dtype=np.float32)
    return Corpus(texts, sparse, vectors, seconds_bm25, time.perf_counter() - started)


def random_unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def document_texts(corpus: Corpus, document: int) -> list[str]:
    first = document * CHUNKS_PER_DOCUMENT
    return [corpus.texts[(first + k) % len(corpus.texts)] for k in range(CHUNKS_PER_DOCUMENT)]


def document_points(corpus: Corpus, document: int, users: int, generation: int = 1,
                    place: Placement | None = None) -> list[ChunkPoint]:
    """The chunks of one document, with character offsets into `SEPARATOR.join(texts)`."""
    owner, collection = place(document) if place else (user_of(document, users), DEFAULT_COLLECTION)
    first = document * CHUNKS_PER_DOCUMENT
    noise = random_unit_vectors(CHUNKS_PER_DOCUMENT, seed=document)
    points: list[ChunkPoint] = []
    offset = 0
    doc_id = f"bench-doc-{document:07d}"
    for k, text in enumerate(document_texts(corpus, document)):
        pool_index = (first + k) % len(corpus.texts)
        dense = corpus.real_vectors[pool_index] if pool_index < corpus.real else noise[k]
        points.append(ChunkPoint(
            id=point_id(doc_id, k, generation), owner=owner, collection_id=collection, document_id=doc_id,
            chunk_index=k, text=text, title=document_title(document), start=offset, end=offset + len(text),
            dense=dense.tolist(), sparse=corpus.sparse[pool_index], metadata={}, generation=generation,
        ))
        offset += len(text) + len(SEPARATOR)
    return points


def point_batches(corpus: Corpus, chunks: int, users: int, batch_documents: int = 100,
                  place: Placement | None = None) -> Iterator[list[ChunkPoint]]:
    documents = chunks // CHUNKS_PER_DOCUMENT
    for first in range(0, documents, batch_documents):
        yield [p for d in range(first, min(documents, first + batch_documents))
               for p in document_points(corpus, d, users, place=place)]


async def fill_vector_store(store, corpus: Corpus, chunks: int, users: int,  # noqa: ANN001 - any VectorStore
                            place: Placement | None = None) -> float:
    """Upsert `chunks` chunks through the adapter; returns the seconds it took."""
    started = time.perf_counter()
    for batch in point_batches(corpus, chunks, users, place=place):
        await store.upsert(batch)
    return time.perf_counter() - started


async def fill_documents_table(database_url: str, corpus: Corpus, chunks: int, users: int) -> float:
    """The `ready` rows that own the chunks (content = the chunks joined), so the SQL side
    agrees with the vectors: `GET /documents` lists them, quotas count them, repair skips them."""
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    from rag_service.storage.models import Document, DocumentStatus, utcnow

    started = time.perf_counter()
    engine = create_async_engine(database_url)
    created = utcnow() - timedelta(hours=1)
    try:
        async with engine.begin() as connection:
            rows = []
            for document in range(chunks // CHUNKS_PER_DOCUMENT):
                content = SEPARATOR.join(document_texts(corpus, document))
                rows.append({
                    "id": f"bench-doc-{document:07d}", "user_id": user_of(document, users),
                    "title": document_title(document), "content": content,
                    "content_hash": hashlib.sha256(content.encode()).hexdigest(), "source_name": None,
                    "mime_type": "text/plain", "metadata_": {}, "status": DocumentStatus.READY, "error": None,
                    "chunk_count": CHUNKS_PER_DOCUMENT, "content_chars": len(content), "generation": 1,
                    "claimed_at": None, "created_at": created, "updated_at": created,
                })
                if len(rows) == 500:
                    await connection.execute(insert(Document), rows)
                    rows = []
            if rows:
                await connection.execute(insert(Document), rows)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


def shard_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20
