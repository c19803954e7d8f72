"""Hybrid ranking above the vector stores: weighted rank fusion, a title field and
chunk-to-document aggregation.

Every store gives the service its dense and its BM25 candidate lists (the same two
queries in Qdrant Edge, a Qdrant server and pgvector, covered by the shared contract
suite); everything that decides the final order happens here, once, so the three stores
rank alike and a stored collection needs no new field or reindex:

- **weighted reciprocal rank fusion** of the two chunk lists: a chunk at rank r (from 0,
  as Qdrant counts) of a list of weight w earns w / (k + r);
- **title field**: documents among the candidates whose title shares stemmed terms with
  the query (the same BM25 tokenizer, so "mounting" meets "mount(8)") form a third,
  document-level ranked list, ordered by the share of the query's terms the title holds;
  its weight is added to every chunk of those documents. A title is a short, dense
  statement of what a document is about, and in a chunk's own BM25 vector it is one
  mention among hundreds of words;
- **document aggregation**: a document whose several passages match is a better answer
  than one with a single lucky chunk: every chunk of a document gets a share of the
  fused scores of the document's other best chunks.

A chunk's final score is its own fused score plus its document's bonus (title and
aggregation), so the best chunk of a document carries the document's score and the
collapse (search/service.py) still picks distinct passages, ordered by score.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from rag_service.storage.vectors import ChunkHit


@dataclass(frozen=True)
class RankingConfig:
    """How the service ranks hybrid results. `fusion="store"` is the earlier ranking (the
    store's own equal-weight RRF, no title field, no aggregation), kept for comparisons."""

    fusion: str = "weighted"  # "weighted" (this module) or "store"
    rrf_k: int = 60
    dense_weight: float = 1.0
    keyword_weight: float = 1.0
    title_weight: float = 1.0
    # Share of a document's 2nd and 3rd best chunk scores added to all its chunks.
    document_weight: float = 0.5
    # Fused documents' other chunks that count towards the aggregation.
    aggregated_chunks: int = 2

    def __post_init__(self) -> None:
        if self.fusion not in ("weighted", "store"):
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if self.rrf_k < 0 or min(self.dense_weight, self.keyword_weight, self.title_weight, self.document_weight) < 0:
            raise ValueError("rank fusion constants and weights must not be negative")


BASELINE_RANKING = RankingConfig(fusion="store")
DEFAULT_RANKING = RankingConfig()

TermsOf = Callable[[str], frozenset[int]]
_TITLE_SEPARATORS = re.compile(r"[()\[\]{}<>._/\\:@,+=-]+")


def title_words(title: str) -> str:
    """A title as words: "systemd.exec(5)" -> "systemd exec 5", "logind.conf.d" -> "logind conf d"."""
    return " ".join(_TITLE_SEPARATORS.sub(" ", title).split())


def fuse(
    dense: list[ChunkHit],
    keyword: list[ChunkHit],
    query_terms: frozenset[int],
    terms_of: TermsOf,
    config: RankingConfig = DEFAULT_RANKING,
) -> list[ChunkHit]:
    """Chunks of both lists, best first, with their final scores (see the module docstring).

    `query_terms` are the query's BM25 term ids; `terms_of(title)` gives a title's.
    """
    k = config.rrf_k
    fused: dict[str, float] = {}
    chunks: dict[str, ChunkHit] = {}
    for weight, ranked in ((config.dense_weight, dense), (config.keyword_weight, keyword)):
        if weight == 0:
            continue
        for rank, hit in enumerate(ranked):
            fused[hit.id] = fused.get(hit.id, 0.0) + weight / (k + rank)
            chunks.setdefault(hit.id, hit)
    by_document: dict[str, list[float]] = {}
    titles: dict[str, str] = {}
    for chunk_id, score in fused.items():
        hit = chunks[chunk_id]
        by_document.setdefault(hit.document_id, []).append(score)
        titles.setdefault(hit.document_id, hit.title)
    bonus = {document: 0.0 for document in by_document}
    if config.document_weight:
        for document, scores in by_document.items():
            scores.sort(reverse=True)
            others = scores[1 : 1 + config.aggregated_chunks]
            bonus[document] += config.document_weight * sum(others)
    if config.title_weight and query_terms:
        shares = {}
        for document, title in titles.items():
            shared = len(query_terms & terms_of(title))
            if shared:
                shares[document] = shared / len(query_terms)
        best = {document: max(scores) for document, scores in by_document.items()}
        ranked_titles = sorted(shares, key=lambda d: (-shares[d], -best[d], d))
        for rank, document in enumerate(ranked_titles):
            bonus[document] += config.title_weight / (k + rank)
    rescored = [dataclasses.replace(chunks[c], score=s + bonus[chunks[c].document_id]) for c, s in fused.items()]
    rescored.sort(key=lambda h: (-h.score, h.document_id, h.chunk_index))
    return rescored
