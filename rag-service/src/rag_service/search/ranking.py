"""Hybrid ranking above the vector stores: document-level score fusion of the dense and
BM25 candidate lists (with an optional title field).

Every store gives the service its dense and its BM25 candidate lists (the same two
queries in Qdrant Edge, a Qdrant server and pgvector, covered by the shared contract
suite); everything that decides the final order happens here, once, so the three stores
rank alike and a stored collection needs no new field or reindex.

- **Chunk-to-document aggregation**: in each list a document scores its best chunk's score
  (MaxP), so a page whose description matches by meaning in one passage and whose terms
  match in another gets both credits, which rank fusion of single chunks never gave it.
- **Score fusion**: each list's scores are min-max normalized over its candidates (cosine
  and BM25 live on different scales) and combined as `dense_weight * dense + (1 -
  dense_weight) * keyword`: a convex combination, which keeps how far ahead a match is,
  where reciprocal rank fusion keeps only its rank (Bruch et al., "An Analysis of Fusion
  Functions for Hybrid Retrieval", 2023). A document absent from a list scores 0 there.
- **Lead passage** (`lead_weight`): a document also scores `lead_weight` times its first
  chunk's fused score (when that chunk is a candidate). A document's opening states what it
  is about (a man page's synopsis and first paragraph, an abstract, a README's first lines):
  a query that matches it is about the document, where a match deep in another document may
  be a passing mention. The document-ranking literature's FirstP beside MaxP (Dai and Callan,
  "Deeper Text Understanding for IR with Contextual Neural Language Modeling", 2019). On
  manpages-dev (docs/performance.md) it raised hybrid nDCG@10 from 0.870 to 0.892, on both
  halves of the queries and on every query type, and left the held-out questions unchanged.
- **Title field** (off by default): `title_weight * share of the query's stemmed terms in
  the title`. Measured on manpages-dev it did not help (docs/performance.md): man page
  titles are names, and a query naming a family ("systemd ...") matches dozens of them.

A chunk's score is its own fused score plus its document's aggregation bonus (the
document's score minus its best chunk's own score): the best chunk of a document carries
the document's score, the document's other chunks stay below it in their own order, and
the collapse (search/service.py) picks distinct passages ordered by score. Scores are in
[0, 1 + lead_weight + title_weight].
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
    store's own reciprocal rank fusion of chunks, k=60), kept for comparisons."""

    fusion: str = "convex"  # "convex" (this module) or "store"
    # Share of the dense score; the keyword (BM25) score gets the rest.
    dense_weight: float = 0.6
    # Documents score their best chunk per list (MaxP); False fuses chunks alone.
    aggregate_documents: bool = True
    # Share of the first chunk's fused score a document adds to its own (module docstring).
    # Chosen on manpages-dev's 1,104 queries: 0.2 to 0.5 all gained 0.017-0.025 nDCG@10 over
    # none; 0.3 is the middle of that plateau, not its peak.
    lead_weight: float = 0.3
    title_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.fusion not in ("convex", "store"):
            raise ValueError(f"unknown fusion {self.fusion!r}")
        if not 0.0 <= self.dense_weight <= 1.0:
            raise ValueError("dense_weight is a share, from 0 to 1")
        if self.title_weight < 0 or self.lead_weight < 0:
            raise ValueError("title_weight and lead_weight must not be negative")


BASELINE_RANKING = RankingConfig(fusion="store")
DEFAULT_RANKING = RankingConfig()


def passage_ranking(config: RankingConfig) -> RankingConfig:
    """`config` without its document-level terms (best chunk, lead passage, title): each
    chunk ranked on its own fused score, as the search among the documents found ranks
    their passages (search/service.py)."""
    return dataclasses.replace(config, aggregate_documents=False, lead_weight=0.0, title_weight=0.0)


TermsOf = Callable[[str], frozenset[int]]
_TITLE_SEPARATORS = re.compile(r"[()\[\]{}<>._/\\:@,+=-]+")


def title_words(title: str) -> str:
    """A title as words: "systemd.exec(5)" -> "systemd exec 5", "logind.conf.d" -> "logind conf d"."""
    return " ".join(_TITLE_SEPARATORS.sub(" ", title).split())


def _normalized(hits: list[ChunkHit]) -> dict[str, float]:
    """Chunk id -> score min-max normalized over the list (1.0 when all scores are equal)."""
    if not hits:
        return {}
    high, low = max(h.score for h in hits), min(h.score for h in hits)
    spread = high - low
    return {h.id: (h.score - low) / spread if spread > 0 else 1.0 for h in hits}


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
    alpha = config.dense_weight
    dense_scores, keyword_scores = _normalized(dense), _normalized(keyword)
    chunks: dict[str, ChunkHit] = {}
    for hit in (*dense, *keyword):
        chunks.setdefault(hit.id, hit)
    own = {c: alpha * dense_scores.get(c, 0.0) + (1 - alpha) * keyword_scores.get(c, 0.0) for c in chunks}
    best_own: dict[str, float] = {}
    best_dense: dict[str, float] = {}
    best_keyword: dict[str, float] = {}
    for chunk_id, hit in chunks.items():
        document = hit.document_id
        best_own[document] = max(best_own.get(document, 0.0), own[chunk_id])
        best_dense[document] = max(best_dense.get(document, 0.0), dense_scores.get(chunk_id, 0.0))
        best_keyword[document] = max(best_keyword.get(document, 0.0), keyword_scores.get(chunk_id, 0.0))
    bonus = {}
    for document in best_own:
        aggregated = alpha * best_dense[document] + (1 - alpha) * best_keyword[document]
        bonus[document] = aggregated - best_own[document] if config.aggregate_documents else 0.0
    if config.lead_weight:
        for chunk_id, hit in chunks.items():
            if hit.chunk_index == 0:
                bonus[hit.document_id] += config.lead_weight * own[chunk_id]
    if config.title_weight and query_terms:
        titles = {hit.document_id: hit.title for hit in chunks.values()}
        for document, title in titles.items():
            bonus[document] += config.title_weight * len(query_terms & terms_of(title)) / len(query_terms)
    rescored = [dataclasses.replace(hit, score=own[c] + bonus[hit.document_id]) for c, hit in chunks.items()]
    rescored.sort(key=lambda h: (-h.score, h.document_id, h.chunk_index))
    return rescored
