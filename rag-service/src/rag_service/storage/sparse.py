"""BM25 sparse vectors, computed in-process with `qdrant_edge.Bm25` for both vector stores.

How keyword scoring works (the same against Qdrant Edge and a Qdrant server):
- a document chunk gets term-frequency weights, saturated by `k` and normalized by chunk
  length (`b`, `avg_len`);
- a query gets weight 1.0 per distinct term;
- the IDF factor is applied at query time by the collection's sparse vector, declared with
  the IDF modifier (`bm25` in both adapters), so it tracks the stored chunks.
The dot product of the two is then the BM25 score of the chunk.

Token ids are hashes of the (lowercased, stemmed) tokens, not positions in a vocabulary,
so the same text gives the same indices in every process and across restarts.
"""

from __future__ import annotations

import qdrant_edge

from rag_service.storage.vectors import SparseVector

# Chunks are ~200 tokens by default (Settings.chunk_size_tokens); BM25's length
# normalization compares each chunk with this expected length.
DEFAULT_AVG_CHUNK_TOKENS = 200.0


class SparseEncoder:
    """BM25 encoder: `encode_documents` for stored chunks, `encode_query` for searches.

    English tokenization, stopwords and Snowball stemming ("indexes" matches "index").
    Changing any parameter changes stored vectors: re-index after doing so.
    """

    def __init__(
        self,
        *,
        k: float = 1.2,
        b: float = 0.75,
        avg_len: float = DEFAULT_AVG_CHUNK_TOKENS,
        language: str = "english",
    ) -> None:
        config = qdrant_edge.Bm25Config(k=k, b=b, avg_len=avg_len, language=language)
        self._model = qdrant_edge.Bm25(config)

    def encode_documents(self, texts: list[str]) -> list[SparseVector]:
        return [_convert(self._model.embed_document(text)) for text in texts]

    def encode_query(self, text: str) -> SparseVector:
        """Term presence of the query; empty when it has only stopwords or punctuation."""
        return _convert(self._model.embed_query(text))


def _convert(vector: qdrant_edge.SparseVector) -> SparseVector:
    # Sorted indices: a canonical form, so equal texts give equal vectors.
    pairs = sorted(zip(vector.indices, vector.values))
    return SparseVector(indices=[i for i, _ in pairs], values=[float(v) for _, v in pairs])
