"""Request and response shapes of `POST /search` (the filters: search/filters.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from rag_service.search.filters import MAX_TOP_K, MIN_TOP_K, SearchFilters

SearchModeField = Literal["hybrid", "dense", "keyword"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The length limit (settings.max_query_chars) is checked by the service, which knows it.
    query: StrictStr = Field(min_length=1)
    top_k: int = Field(default=5, ge=MIN_TOP_K, le=MAX_TOP_K)
    filters: SearchFilters | None = None
    mode: SearchModeField = "hybrid"
    # Minimum cosine similarity of the dense match (dense and hybrid modes).
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    # The seed contract returns the query vector; clients that do not need it save ~8 KB.
    include_embedding: bool = True

    @field_validator("query")
    @classmethod
    def _not_blank(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("query must not be blank")
        return query


class SearchResultItem(BaseModel):
    document_id: str
    title: str
    chunk_index: int
    text: str
    score: float = Field(description=(
        "Higher is better. dense: cosine similarity; keyword: BM25 score; "
        "hybrid: fused score from 0 to 1, the normalized cosine and BM25 scores of the "
        "document's best chunks weighted 0.6 / 0.4 (compare within one response only)"
    ))
    metadata: dict[str, Any]
    # Character offsets of the chunk in the document's content.
    start: int
    end: int


class SearchResponse(BaseModel):
    results: list[SearchResultItem]
    # The dense query vector (seed contract); empty when include_embedding is false.
    query_embedding: list[float]
