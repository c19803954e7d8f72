"""POST /documents/batch: the two request shapes, read into the intake's items.

One route, two content types:
- `application/json`: `{"items": [{"title", "content", "metadata"?}, ...]}`, text items only;
- `multipart/form-data`: the files as `files` parts, and optionally a `manifest` part holding
  JSON `{"items": [...]}` whose items are text items or file items
  `{"file": <index among the files parts, from 0>, "title"?, "metadata"?}`, in the order the
  answer follows. Without a manifest every file is an item, in order, titled by its own
  title (HTML <title>, PDF / DOCX properties) or its name.

What makes the request itself unreadable is a 4xx for the whole request, before anything
is stored or charged: a body or manifest that is not JSON, no `items` list, more than
MAX_BATCH_ITEMS items (413), and file references that do not match the parts (a `file`
that is not an index of a part, a part used twice or by no item). An item of the wrong
shape (a missing title, a number for the content, unpaired surrogates) is that item's
error and the other items go on.

Parsing touches up to MAX_BATCH_BYTES: the route runs these functions in a thread.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from rag_service.config import Settings
from rag_service.documents.intake import check_batch_count, utf8_size
from rag_service.documents.records import BatchItem, FileItem, InvalidItem, TextItem, UploadedFile
from rag_service.documents.schemas import BatchFileItem, BatchTextItem
from rag_service.errors import Unprocessable, describe_validation_errors

# Multipart framing and form fields on top of the documents' own bytes.
BATCH_BODY_MARGIN_BYTES = 64 * 1024
INVALID_TEXT = "text contains unpaired UTF-16 surrogates (not valid Unicode)"


def batch_body_bytes(settings: Settings) -> int:
    """The largest body of POST /documents/batch read at all: JSON escaping and multipart
    framing add to the documents' bytes (which the intake counts exactly, MAX_BATCH_BYTES)."""
    return settings.max_batch_bytes + settings.max_batch_bytes // 4 + BATCH_BODY_MARGIN_BYTES


def parse_json_batch(body: bytes, settings: Settings) -> list[BatchItem]:
    items = []
    for raw in _raw_items(body, "the request body", settings):
        if isinstance(raw, dict) and "file" in raw:
            items.append(InvalidItem(Unprocessable(
                "file items need a multipart/form-data request carrying the files as `files` parts",
                code="validation_error")))
        else:
            items.append(_text_item(raw))
    return items


def parse_multipart_batch(manifest: str | bytes | None, files: list[UploadedFile],
                          settings: Settings) -> list[BatchItem]:
    if manifest is None:
        check_batch_count(len(files), settings)
        return [FileItem(file, None, None) for file in files]
    used: set[int] = set()
    items: list[BatchItem] = []
    for raw in _raw_items(manifest, "the manifest", settings):
        if not (isinstance(raw, dict) and "file" in raw):
            items.append(_text_item(raw))
            continue
        index = raw["file"]
        if type(index) is not int or not 0 <= index < len(files):
            raise Unprocessable(f"manifest item file={str(index)[:20]!r} is not the index of one of the "
                                f"{len(files)} `files` parts (0 to {len(files) - 1})")
        if index in used:
            raise Unprocessable(f"`files` part {index} is used by two manifest items")
        used.add(index)
        items.append(_file_item(raw, files[index]))
    unused = sorted(set(range(len(files))) - used)
    if unused:
        raise Unprocessable(f"`files` parts {unused[:10]} are used by no manifest item")
    return items


def _raw_items(document: str | bytes, what: str, settings: Settings) -> list[Any]:
    try:
        value = json.loads(document)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Unprocessable(f"{what} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict) or not isinstance(value.get("items"), list):
        raise Unprocessable(f'{what} must be a JSON object {{"items": [...]}}')
    if set(value) != {"items"}:
        raise Unprocessable(f"{what} has unexpected fields: {sorted(set(value) - {'items'})[:5]}")
    check_batch_count(len(value["items"]), settings)
    return value["items"]


def _text_item(raw: Any) -> BatchItem:
    parsed = _validated(BatchTextItem, raw)
    if isinstance(parsed, InvalidItem):
        return parsed
    try:
        _check_encodable(parsed.title, parsed.metadata)
        size = utf8_size(parsed.content)
    except UnicodeEncodeError:
        return InvalidItem(Unprocessable(INVALID_TEXT, code="invalid_text"), size=len(parsed.content))
    return TextItem(parsed.title, parsed.content, parsed.metadata, size)


def _file_item(raw: dict[str, Any], file: UploadedFile) -> BatchItem:
    parsed = _validated(BatchFileItem, raw)
    if isinstance(parsed, InvalidItem):
        return InvalidItem(parsed.error, size=file.size)
    try:
        _check_encodable(parsed.title, parsed.metadata)
    except UnicodeEncodeError:
        return InvalidItem(Unprocessable(INVALID_TEXT, code="invalid_text"), size=file.size)
    return FileItem(file, parsed.title, parsed.metadata)


def _validated(model: type[BaseModel], raw: Any) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        message, details = describe_validation_errors(exc.errors())
        return InvalidItem(Unprocessable(message, code="validation_error", details=details))


def _check_encodable(title: str | None, metadata: dict[str, Any] | None) -> None:
    """Raise UnicodeEncodeError for unpaired surrogates, which no database driver accepts."""
    (title or "").encode("utf-8")
    if metadata:
        json.dumps(metadata, ensure_ascii=False).encode("utf-8")


def _items_schema(*models: type[BaseModel]) -> dict[str, Any]:
    schemas = [model.model_json_schema() for model in models]  # flat models: no $defs to carry
    item = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    return {"type": "object", "required": ["items"], "additionalProperties": False,
            "properties": {"items": {"type": "array", "minItems": 1, "items": item}}}


# `openapi_extra` of the route: the body is read by hand (a bad item must not fail the
# request as FastAPI's own body validation would), so both shapes are documented here.
OPENAPI_REQUEST_BODY: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": _items_schema(BatchTextItem)},
    "multipart/form-data": {
        "schema": {"type": "object", "properties": {
            "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                      "description": "The files (.pdf, .docx, .pptx, .xlsx, .odt, .epub, .html, .md, or text of any name)"},
            "manifest": {**_items_schema(BatchTextItem, BatchFileItem),
                         "description": "Optional: text items and file items {file: <index among the files "
                                        "parts>, title?, metadata?}; without it every file is an item, in order"},
        }},
        "encoding": {"manifest": {"contentType": "application/json"}},
    },
}}}
