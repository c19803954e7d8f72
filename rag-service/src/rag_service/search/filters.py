"""What a search may ask for: the bounds of `top_k`, and the filters (shared by /search,
/chat, the MCP tools and the OpenAI-compatible API).

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
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from rag_service.errors import Unprocessable

MAX_FILTER_DOCUMENT_IDS = 100
MAX_FILTER_METADATA_FIELDS = 16
MAX_FILTER_VALUES = 50
MAX_FILTER_STRING_CHARS = 256
MIN_TOP_K = 1
MAX_TOP_K = 50

# Same shape as `storage.vectors.metadata_field` accepts: plain names, dots for nesting.
_METADATA_KEY = re.compile(r"[A-Za-z0-9_\-]{1,64}(\.[A-Za-z0-9_\-]{1,64}){0,3}")

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


def parse_filters(filters: SearchFilters | Mapping[str, Any] | None) -> SearchFilters | None:
    """Filters from a `SearchFilters` or a plain mapping (e.g. a chat request's JSON)."""
    if filters is None or isinstance(filters, SearchFilters):
        return filters
    if not isinstance(filters, Mapping):
        raise Unprocessable("filters must be an object")
    try:
        return SearchFilters.model_validate(dict(filters))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'filters'}: {error['msg']}" for error in exc.errors()
        )
        raise Unprocessable(f"invalid filters: {problems}") from exc
