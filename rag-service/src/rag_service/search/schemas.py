"""Request and response shapes of `POST /search` (the filters: search/filters.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, field_validator

from rag_service.search.filters import SearchFilters

SearchModeField = Literal["hybrid", "dense", "keyword"]


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The length limit (settings.max_query_chars) is checked by the service, which knows it.
    query: StrictStr = Field(min_length=1)
    # From 1 to settings.max_search_top_k, checked by the service (as the query's length).
    top_k: int = 5
    filters: SearchFilters | None = None
    mode: SearchModeField = "hybrid"
    # Minimum cosine similarity of the dense match (dense and hybrid modes).
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    # The dense query vector in the response (384 floats with the local model, ~8 KB of
    # JSON): only when asked for.
    include_embedding: bool = Field(default=False, description="Return the dense query vector in `query_embedding`")

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
        "hybrid: fused score from 0 to 1.3, the normalized cosine and BM25 scores of the "
        "document's best chunks weighted 0.6 / 0.4, plus 0.3 x its first chunk's when that "
        "one matches too (compare within one response only)"
    ))
    metadata: dict[str, Any]
    # Character offsets of the chunk in the document's content.
    start: int
    end: int


class SearchResponse(BaseModel):
    results: list[SearchResultItem]
    query_embedding: list[float] = Field(description="The dense query vector when `include_embedding` is true, else empty")
