"""Request and response shapes of `POST /search`, and the filter schema shared with chat.

Filters (every key optional, unknown keys rejected):

    {"document_ids": ["<id>", ...],                  # any of these documents
     "metadata": {"lang": "en",                      # field equals the value
                  "year": [2023, 2024]}}             # field equals any of the values

Conditions are ANDed together and with the caller's access scope, so a filter can only
narrow a search. Metadata values are scalars (string, integer, float, boolean) or flat lists
of scalars; nested objects, empty lists and oversized filters are rejected (422).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

MAX_FILTER_DOCUMENT_IDS = 100
MAX_FILTER_METADATA_FIELDS = 16
MAX_FILTER_VALUES = 50
MAX_FILTER_STRING_CHARS = 256
MIN_TOP_K = 1
MAX_TOP_K = 50

# Same shape as `storage.vectors.metadata_field` accepts: plain names, dots for nesting.
_METADATA_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,3}")

SearchModeField = Literal["hybrid", "dense", "keyword"]
# Strict types: "1" stays a string and true stays a boolean (no silent coercion).
ScalarValue = StrictBool | StrictInt | StrictFloat | Annotated[StrictStr, Field(max_length=MAX_FILTER_STRING_CHARS)]
MetadataValue = ScalarValue | Annotated[list[ScalarValue], Field(min_length=1, max_length=MAX_FILTER_VALUES)]


class SearchFilters(BaseModel):
    """What a caller may narrow a search by. There is no way to name another user, and a
    collection the caller cannot read matches nothing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    collection_id: StrictStr | None = Field(
        default=None, min_length=1, max_length=36,
        description='One collection: "personal" (the default one) or a collection id; default: every '
                    "collection the caller can read (its own and its organizations')",
    )

    document_ids: (
        Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=64)]],
                  Field(min_length=1, max_length=MAX_FILTER_DOCUMENT_IDS)]
        | None
    ) = None
    metadata: dict[str, MetadataValue] | None = None

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, metadata: dict[str, Any] | None) -> dict[str, Any] | None:
        if metadata is None:
            return None
        if len(metadata) > MAX_FILTER_METADATA_FIELDS:
            raise ValueError(f"at most {MAX_FILTER_METADATA_FIELDS} metadata fields can be filtered on")
        for key in metadata:
            if not _METADATA_KEY.fullmatch(key):
                raise ValueError(f"invalid metadata field name {key[:80]!r}: use letters, digits, '_', '-' and '.'")
        return metadata

    def metadata_values(self) -> dict[str, list[str | int | float | bool]]:
        """Metadata conditions in `access_filter`'s form: field -> accepted values."""
        return {
            key: list(value) if isinstance(value, list) else [value]
            for key, value in (self.metadata or {}).items()
        }


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
