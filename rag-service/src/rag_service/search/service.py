"""Search over the chunks the caller may read (its own and its organizations'): hybrid (dense + BM25, fused in search/ranking.py), dense or keyword.

The vector store retrieves; this service embeds the query, scopes it to the caller's
`Access`, and in hybrid mode asks the store for its dense and its BM25 candidates and ranks
them itself (search/ranking.py: document-level score fusion),
so that every store ranks alike. It over-fetches and then collapses the candidates so that
several chunks of one passage do not crowd other documents out of the top k. Asked for more
chunks of the documents found (the chat reads them), it searches again among those documents
only, ranking their chunks as passages (`same_document_chunks`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rag_service.config import Settings
from rag_service.errors import Unprocessable, check_in_range
from rag_service.providers.base import Embedder
from rag_service.search.ranking import DEFAULT_RANKING, RankingConfig, fuse, passage_ranking, title_words
from rag_service.search.filters import SearchFilters, parse_filters
from rag_service.storage.sparse import SparseEncoder
from rag_service.storage.access import Access, access_filter
from rag_service.storage.vectors import ChunkFilter, ChunkHit, QueryVectors, SearchMode, SparseVector, VectorStore

SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "dense", "keyword")
# Candidates fetched per requested result, so the collapse still has top_k to return.
DEFAULT_OVERFETCH = 3
# Candidates per list (dense, BM25) that the hybrid ranking fuses, at the least.
HYBRID_LIST_DEPTH = 40
# Distinct passages of one document allowed in the first pass of the collapse.
DEFAULT_MAX_CHUNKS_PER_DOCUMENT = 2
# Candidates per list (dense, BM25) of the search among the documents found, for more of
# their chunks (`same_document_chunks`). 40 and 60 were tried on the dev questions' stores
# (docs/performance.md): 60 cited one more page on one copy, the same on the other.
SAME_DOCUMENT_DEPTH = 60


@dataclass(frozen=True)
class SearchResult:
    hits: list[ChunkHit]
    # The dense query vector; empty when not requested in keyword mode.
    query_embedding: list[float]
    # More chunks of the documents in `hits`, best first (see `SearchService.search`).
    same_document_hits: list[ChunkHit] = field(default_factory=list)


def collapse_hits(hits: list[ChunkHit], top_k: int, max_per_document: int) -> list[ChunkHit]:
    """Pick up to `top_k` hits from best-first `hits`, favouring distinct passages.

    1. Diversity pass, best first: keep a hit unless its document already has
       `max_per_document` kept hits, or it overlaps or neighbours (adjacent chunk index,
       or touching/overlapping character range) a kept hit of the same document; such
       neighbours repeat the same passage, which the kept chunk already represents.
    2. Fill pass, only when fewer than `top_k` were kept (e.g. the caller owns one
       document): admit the hits skipped for the per-document cap or for being a
       neighbour, best first, unless their text overlaps a kept chunk (true duplicates
       never come back).
    The result is ordered by score. Equal scores (common with rank fusion: rank 3 of the
    dense list alone scores the same as rank 3 of the keyword list alone) are ordered by
    document id and chunk index, so the same query always gives the same results.
    """
    if top_k <= 0:
        return []
    kept: list[tuple[int, ChunkHit]] = []
    by_document: dict[str, list[ChunkHit]] = {}
    skipped: list[tuple[int, ChunkHit]] = []
    seen_ids: set[str] = set()
    ranked = sorted(hits, key=lambda h: (-h.score, h.document_id, h.chunk_index))
    for position, hit in enumerate(ranked):
        if hit.id in seen_ids:
            continue
        seen_ids.add(hit.id)
        same_document = by_document.setdefault(hit.document_id, [])
        if len(kept) < top_k and len(same_document) < max_per_document and not any(
            _neighbours(hit, other) for other in same_document
        ):
            kept.append((position, hit))
            same_document.append(hit)
        else:
            skipped.append((position, hit))
    for position, hit in skipped:
        if len(kept) >= top_k:
            break
        same_document = by_document[hit.document_id]
        if not any(_overlaps(hit, other) for other in same_document):
            kept.append((position, hit))
            same_document.append(hit)
    kept.sort(key=lambda item: (-item[1].score, item[0]))
    return [hit for _, hit in kept]


def more_of_the_documents(candidates: list[ChunkHit], kept: list[ChunkHit], limit: int) -> list[ChunkHit]:
    """Up to `limit` more of best-first `candidates` from the documents of `kept`, best
    first, none repeating (overlapping) a kept chunk or each other."""
    documents = {hit.document_id for hit in kept}
    chosen = list(kept)
    more: list[ChunkHit] = []
    for hit in candidates:
        if len(more) >= limit:
            break
        if hit.document_id in documents and not any(
            other.document_id == hit.document_id and _overlaps(hit, other) for other in chosen
        ):
            chosen.append(hit)
            more.append(hit)
    return more


def _overlaps(a: ChunkHit, b: ChunkHit) -> bool:
    return a.chunk_index == b.chunk_index or (a.start < b.end and b.start < a.end)


def _neighbours(a: ChunkHit, b: ChunkHit) -> bool:
    return abs(a.chunk_index - b.chunk_index) <= 1 or (a.start <= b.end and b.start <= a.end)


class SearchService:
    """Searches the chunks a caller may see. Stateless apart from its collaborators: build one per request."""

    def __init__(
        self,
        vector_store: VectorStore,
        sparse_encoder: SparseEncoder,
        embedder: Embedder,
        settings: Settings,
        *,
        overfetch: int = DEFAULT_OVERFETCH,
        max_chunks_per_document: int = DEFAULT_MAX_CHUNKS_PER_DOCUMENT,
        ranking: RankingConfig = DEFAULT_RANKING,
    ) -> None:
        self.vector_store = vector_store
        self.sparse_encoder = sparse_encoder
        self.embedder = embedder
        self.settings = settings
        self.overfetch = max(1, overfetch)
        self.max_chunks_per_document = max(1, max_chunks_per_document)
        self.ranking = ranking

    async def search(
        self,
        access: Access,
        query: str,
        top_k: int = 5,
        filters: SearchFilters | Mapping[str, Any] | None = None,
        mode: SearchMode = "hybrid",
        min_score: float | None = None,
        *,
        include_embedding: bool = False,
        retrieval_text: str | None = None,
        same_document_chunks: int = 0,
    ) -> SearchResult:
        """The best `top_k` distinct chunks for `query` among those `access` may see.

        `retrieval_text`, when given, is what gets embedded and BM25-encoded instead of
        `query` (e.g. a multi-turn question condensed with earlier turns by the chat);
        it may be up to `settings.max_embed_chars` long. `min_score` is a minimum cosine
        similarity for dense matches (dense and hybrid modes; in hybrid, keyword matches
        still come through). In keyword mode the query is embedded only when
        `include_embedding` asks for the vector. `same_document_chunks` asks for up to that
        many more chunks of the documents found: the chat reads them for the passage that
        answers (the top k hold a document's best two passages by the document's ranking,
        not always the one that answers). They come from a second search, in the same mode,
        among those documents only (`_passages`), so a passage ranked far down the whole
        collection (socket(7)'s SO_REUSEPORT under a question about sockets sharing a port)
        is still found in its document.
        """
        text = self._checked_text(query, retrieval_text)
        if mode not in SEARCH_MODES:
            raise Unprocessable(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
        check_in_range("top_k", top_k, 1, self.settings.max_search_top_k, "max_search_top_k")
        if min_score is not None:
            if mode == "keyword":
                raise Unprocessable("min_score is a dense similarity: use it with the hybrid or dense mode")
            if not -1.0 <= min_score <= 1.0:
                raise Unprocessable("min_score is a cosine similarity, from -1 to 1")
        parsed = parse_filters(filters)

        def scope(document_ids: list[str] | None) -> ChunkFilter:
            return access_filter(
                access,
                collection_id=parsed.collection_id if parsed else None,
                document_ids=document_ids,
                metadata=parsed.metadata_values() if parsed else None,
            )

        where = scope(list(parsed.document_ids or ()) if parsed else None)
        sparse = self.sparse_encoder.encode_query(text)
        limit = top_k * self.overfetch
        if mode == "hybrid" and self.ranking.fusion == "convex":
            dense, candidates = await self._hybrid_candidates(text, sparse, where, limit, min_score)
        else:
            needs_dense = mode != "keyword" or include_embedding
            dense = await self._embed(text) if needs_dense else []
            candidates = await self.vector_store.search(
                QueryVectors(dense=dense, sparse=sparse), where, limit=limit, mode=mode,
                dense_score_threshold=min_score,
            )
        hits = collapse_hits(candidates, top_k, self.max_chunks_per_document)
        more: list[ChunkHit] = []
        if same_document_chunks > 0 and hits:
            # The documents found passed `where`; narrowing it keeps the caller's scope and filters.
            found = scope(list(dict.fromkeys(hit.document_id for hit in hits)))
            passages = await self._passages(text, sparse, dense, found, mode, min_score)
            more = more_of_the_documents(passages, hits, same_document_chunks)
        return SearchResult(hits=hits, query_embedding=list(dense) if include_embedding else [],
                            same_document_hits=more)

    async def _passages(self, text: str, sparse: SparseVector, dense: list[float], where: ChunkFilter,
                        mode: SearchMode, min_score: float | None) -> list[ChunkHit]:
        """The chunks `where` selects (the documents found), best first, SAME_DOCUMENT_DEPTH deep.

        In hybrid mode each chunk is ranked on its own fused score (`passage_ranking`): the
        document-level terms of the ranking (its best chunk, its lead passage) tell which
        documents answer; among the chunks of documents already chosen they would only put
        every chunk of the best document first. On the dev questions' stores the chat then
        answered 1 and 2 more questions right (of 74 and 80) and cited 2 more of 74 than with
        the chunks ranked as documents (docs/performance.md, "A search among the pages found").
        """
        if mode == "hybrid" and self.ranking.fusion == "convex":
            _, ranked = await self._hybrid_candidates(text, sparse, where, SAME_DOCUMENT_DEPTH, min_score,
                                                      dense=dense, ranking=passage_ranking(self.ranking))
            return ranked
        return await self.vector_store.search(
            QueryVectors(dense=dense, sparse=sparse), where, limit=SAME_DOCUMENT_DEPTH, mode=mode,
            dense_score_threshold=min_score,
        )

    async def _hybrid_candidates(
        self, text: str, sparse: SparseVector, where: ChunkFilter, limit: int, min_score: float | None,
        *, dense: list[float] | None = None, ranking: RankingConfig | None = None,
    ) -> tuple[list[float], list[ChunkHit]]:
        """The query's embedding (`dense` when already computed), and the best `limit` chunks
        of the dense and BM25 lists ranked by `search.ranking.fuse` (with `ranking`, by
        default the service's).

        The BM25 list needs no embedding: it is searched while the query is embedded, so a
        search waits for the longer of the two, then the dense list (on a busy machine each
        store call waits for a core, and the encoder for its lane).
        Each list holds `limit` candidates, at least HYBRID_LIST_DEPTH: as deep as a store's own
        hybrid prefetch (120 for a top 10) ranked no better on manpages-dev and cost ~6 ms more
        per search on Edge (payloads of 240 chunks); `min_score` filters the dense list only
        (keyword matches still come through).
        """
        depth = max(limit, HYBRID_LIST_DEPTH)
        keyword = asyncio.create_task(
            self.vector_store.search(QueryVectors(dense=[], sparse=sparse), where, limit=depth, mode="keyword")
        ) if sparse.indices else None
        try:
            if dense is None:
                dense = await self._embed(text)
            dense_hits = await self.vector_store.search(
                QueryVectors(dense=dense, sparse=sparse), where, limit=depth, mode="dense",
                dense_score_threshold=min_score,
            )
            keyword_hits = await keyword if keyword is not None else []
        finally:
            if keyword is not None:
                keyword.cancel()  # still running when the embedding or the dense search failed
                if keyword.done() and not keyword.cancelled():
                    keyword.exception()  # seen: the failure reported is the one that ended the search
        fused = fuse(dense_hits, keyword_hits, frozenset(sparse.indices), self._title_terms, ranking or self.ranking)
        return dense, fused[:limit]

    async def _embed(self, text: str) -> list[float]:
        return (await self.embedder.embed([text], task="query"))[0]

    def _title_terms(self, title: str) -> frozenset[int]:
        return frozenset(self.sparse_encoder.encode_query(title_words(title)).indices)

    def _checked_text(self, query: str, retrieval_text: str | None) -> str:
        if not isinstance(query, str) or not query.strip():
            raise Unprocessable("query must not be empty")
        limit = self.settings.max_query_chars
        if len(query) > limit:
            raise Unprocessable(f"query is {len(query)} characters long; the limit is {limit} (max_query_chars)")
        if retrieval_text is None:
            return query.strip()
        if not retrieval_text.strip():
            raise Unprocessable("retrieval text must not be empty")
        if len(retrieval_text) > self.settings.max_embed_chars:
            raise Unprocessable(
                f"retrieval text is {len(retrieval_text)} characters long; "
                f"the limit is {self.settings.max_embed_chars} (max_embed_chars)"
            )
        return retrieval_text.strip()
