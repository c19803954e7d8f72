"""Process-wide Prometheus counters the services increment (no FastAPI here: business code
imports this module). `observability.setup_metrics` exposes them on `/metrics`."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Incremented by the documents service whenever a document reaches `ready` (upload,
# save-document, `rag ingest`, reindex, start-up repair): every path that stores chunks.
INGESTED_CHUNKS = Counter("rag_ingested_chunks_total", "Chunks embedded and stored in the vector store")
# Incremented by each embedder after a batch it embedded (queries and document chunks).
EMBEDDED_TEXTS = Counter("rag_embedded_texts_total", "Texts sent to the embedding provider", ["provider"])
# Observed by the local encoder's worker per call: how well concurrent queries are
# micro-batched (texts per query call) and how big ingestion sub-batches are.
LOCAL_ENCODER_BATCH_TEXTS = Histogram(
    "rag_local_encoder_batch_texts",
    "Texts per call of the local embedding model",
    ["priority"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
