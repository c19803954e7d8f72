"""Checks on what a caller sends with a document: title and metadata.

Every violation is a 422 that names the limit, raised before anything is stored.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from rag_service.config import Settings
from rag_service.errors import Unprocessable

MAX_METADATA_DEPTH = 5
MAX_METADATA_KEY_CHARS = 64
# Characters with a meaning in Qdrant payload paths ("a.b", "a[]"): a metadata key
# containing them would address a different field when used in a search filter.
_PATH_CHARACTERS = frozenset(".[]")
# Control characters mean nothing in a title, and PostgreSQL refuses NUL in text columns.
_TITLE_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def validate_title(title: str | None, settings: Settings) -> str:
    title = " ".join(_TITLE_CONTROL_CHARS.sub(" ", title or "").split())
    if not title:
        raise Unprocessable("title must not be empty")
    if len(title) > settings.max_title_chars:
        raise Unprocessable(f"title is longer than {settings.max_title_chars} characters")
    return title


def parse_metadata_json(raw: str | None, settings: Settings) -> dict[str, Any]:
    """Metadata sent as a JSON string (multipart form field)."""
    if raw is None or not raw.strip():
        return {}
    if len(raw.encode("utf-8")) > settings.max_metadata_bytes * 4:
        raise Unprocessable(f"metadata is larger than {settings.max_metadata_bytes} bytes")
    try:
        value = json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise Unprocessable(f"metadata is not valid JSON: {exc}") from exc
    return validate_metadata(value, settings)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def validate_metadata(metadata: Any, settings: Settings) -> dict[str, Any]:
    """A JSON object of at most `max_metadata_bytes` serialized, nested at most 5 deep,
    string keys of 1..64 characters without '.', '[' or ']', values JSON scalars, lists
    or objects (only top-level scalars and lists of scalars are useful in search filters).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise Unprocessable("metadata must be a JSON object")
    _check_value(metadata, depth=1, path="metadata")
    size = len(json.dumps(metadata, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    if size > settings.max_metadata_bytes:
        raise Unprocessable(f"metadata is {size} bytes serialized; the limit is {settings.max_metadata_bytes} bytes")
    return metadata


def _check_value(value: Any, depth: int, path: str) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise Unprocessable(f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise Unprocessable(f"{path} has an empty or non-string key")
            if len(key) > MAX_METADATA_KEY_CHARS:
                raise Unprocessable(f"{path} key {key[:20]!r}... is longer than {MAX_METADATA_KEY_CHARS} characters")
            if _PATH_CHARACTERS & set(key) or any(ord(c) < 32 for c in key):
                raise Unprocessable(f"{path} key {key!r} must not contain '.', '[', ']' or control characters")
            _check_value(item, depth + 1, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, depth + 1, f"{path}[{index}]")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise Unprocessable(f"{path} must be a finite number")
    elif isinstance(value, str):
        if "\x00" in value:
            raise Unprocessable(f"{path} must not contain NUL characters")
    elif value is not None and not isinstance(value, (bool, int)):
        raise Unprocessable(f"{path} has an unsupported value type {type(value).__name__}")
