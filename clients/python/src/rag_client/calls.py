"""Every rag-service route (and the auth-service's API-key routes) as data: method, path,
body, and how to read the answer. The sync and async clients run the same `Call`s, so they
cannot drift apart."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from rag_client.errors import error_for
from rag_client.models import (
    ApiKey,
    BatchFile,
    BatchResult,
    BatchText,
    ChatAnswer,
    Collection,
    Document,
    DocumentPage,
    IngestionSummary,
    SavedDocument,
    SearchHit,
    UploadedDocument,
    sources_from,
)

# (file name, content, MIME type), or a path to read.
FileInput = tuple[str, bytes, str] | tuple[str, bytes] | str | Path
# A batch indexes its documents before answering: far longer than one small request.
BATCH_TIMEOUT = httpx.Timeout(600.0, connect=10.0)


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    parse: Callable[[Any, int], Any]
    json: Any = None
    params: dict[str, Any] | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    data: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # None: the client's own timeout.
    timeout: httpx.Timeout | None = None
    # "auth": an auth-service route called with the sign-in's session token (API keys).
    service: Literal["rag", "auth"] = "rag"

    def url(self, rag_url: str, auth_url: str) -> str:
        return (auth_url if self.service == "auth" else rag_url) + self.path

    def build(self, http: httpx.Client | httpx.AsyncClient, rag_url: str, auth_url: str) -> httpx.Request:
        """The request, with `http`'s defaults (its timeout unless the call has its own)."""
        options: dict[str, Any] = {"json": self.json, "params": self.params, "files": self.files, "data": self.data}
        if self.timeout is not None:
            options["timeout"] = self.timeout
        return http.build_request(self.method, self.url(rag_url, auth_url), headers=self.headers, **options)


def _none(body: Any, status: int) -> None:
    return None


def save(title: str, content: str, metadata: dict[str, Any] | None = None, *,
         collection_id: str | None = None) -> Call:
    body = {"title": title, "content": content, **({"metadata": metadata} if metadata is not None else {})}
    if collection_id is not None:
        body["collection_id"] = collection_id
    return Call("POST", "/save-document", lambda b, s: SavedDocument(b["document_id"], s == 201, b["message"]),
                json=body)


def _file(item: FileInput) -> tuple[str, tuple[str, bytes, str]]:
    if isinstance(item, (str, Path)):
        path = Path(item)
        name, data = path.name, path.read_bytes()
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    elif len(item) == 3:
        name, data, mime = item  # type: ignore[misc]
    else:
        name, data = item  # type: ignore[misc]
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return ("files", (name, data, mime))


def upload(files: Sequence[FileInput], *, title: str | None = None,
           metadata: dict[str, Any] | None = None, collection_id: str | None = None) -> Call:
    data: dict[str, str] = {}
    if title is not None:
        data["title"] = title
    if metadata is not None:
        data["metadata"] = json.dumps(metadata)
    if collection_id is not None:
        data["collection_id"] = collection_id
    return Call("POST", "/documents/upload", _upload_result, files=[_file(f) for f in files], data=data or None)


def _upload_result(body: dict[str, Any], status: int) -> list[UploadedDocument]:
    """The files stored; a file the service refused (it answers per file) raises its error,
    whose `details` list every file's result (the ones stored before and after it too)."""
    refused = [item for item in body.get("items", []) if item.get("result") == "error"]
    if refused:
        first = refused[0]["error"]
        stored = ", ".join(d["title"] for d in body["documents"]) or "none"
        raise error_for(first["status"], first["code"],
                   f"{len(refused)} of {len(body['items'])} files refused (file {refused[0]['index']}: "
                   f"{first['message']}); stored: {stored}", details=body["items"])
    return [UploadedDocument(**d) for d in body["documents"]]


def batch(items: Sequence[BatchText | BatchFile], *, collection_id: str | None = None) -> Call:
    """JSON when every item is text; otherwise multipart: the files as `files` parts and a
    `manifest` listing every item in order (file items point at their part by index). The
    collection is a query parameter: it applies to every item."""
    params = {"collection_id": collection_id} if collection_id is not None else None
    if all(isinstance(item, BatchText) for item in items):
        return Call("POST", "/documents/batch", _batch_result, json={"items": [_text_item(i) for i in items]},
                    params=params, timeout=BATCH_TIMEOUT)
    manifest, files = [], []
    for item in items:
        if isinstance(item, BatchText):
            manifest.append(_text_item(item))
            continue
        entry: dict[str, Any] = {"file": len(files)}
        if item.title is not None:
            entry["title"] = item.title
        if item.metadata is not None:
            entry["metadata"] = item.metadata
        manifest.append(entry)
        files.append(_file(item.file))
    return Call("POST", "/documents/batch", _batch_result, files=files, data={"manifest": json.dumps({"items": manifest})},
                params=params, timeout=BATCH_TIMEOUT)


def _batch_result(body: Any, status: int) -> BatchResult:
    return BatchResult.from_json(body)


def _text_item(item: BatchText) -> dict[str, Any]:
    body: dict[str, Any] = {"title": item.title, "content": item.content}
    if item.metadata is not None:
        body["metadata"] = item.metadata
    return body


def list_documents(page: int = 1, limit: int = 20, *, collection_id: str | None = None) -> Call:
    params: dict[str, Any] = {"page": page, "limit": limit}
    if collection_id is not None:
        params["collection_id"] = collection_id
    return Call("GET", "/documents", lambda b, s: DocumentPage(
        [Document.from_json(d) for d in b["documents"]], b["total"], b["page"], b["pages"]),
        params=params)


def get_document(document_id: str) -> Call:
    return Call("GET", f"/documents/{_segment(document_id)}", lambda b, s: Document.from_json(b))


def delete_document(document_id: str) -> Call:
    return Call("DELETE", f"/documents/{_segment(document_id)}", _none)


def move_document(document_id: str, collection_id: str) -> Call:
    return Call("POST", f"/documents/{_segment(document_id)}/move", lambda b, s: Document.from_json(b),
                json={"collection_id": collection_id})


def summary() -> Call:
    return Call("GET", "/documents/summary", lambda b, s: IngestionSummary.from_json(b))


# --- collections ---------------------------------------------------------------------------

def list_collections() -> Call:
    return Call("GET", "/collections", lambda b, s: [Collection.from_json(c) for c in b["collections"]])


def create_collection(name: str, organization_id: str | None = None) -> Call:
    body: dict[str, Any] = {"name": name}
    if organization_id is not None:
        body["organization_id"] = organization_id
    return Call("POST", "/collections", lambda b, s: Collection.from_json(b), json=body)


def get_collection(collection_id: str) -> Call:
    return Call("GET", f"/collections/{_segment(collection_id)}", lambda b, s: Collection.from_json(b))


def rename_collection(collection_id: str, name: str) -> Call:
    return Call("PATCH", f"/collections/{_segment(collection_id)}", lambda b, s: Collection.from_json(b),
                json={"name": name})


def delete_collection(collection_id: str) -> Call:
    return Call("DELETE", f"/collections/{_segment(collection_id)}", _none)


def with_collection(filters: dict[str, Any] | None, collection_id: str | None) -> dict[str, Any] | None:
    """`filters` narrowed to one collection (`filters.collection_id`); the caller's filters are
    kept. Naming two different collections is a mistake, not a choice to make silently."""
    if collection_id is None:
        return filters
    given = (filters or {}).get("collection_id")
    if given is not None and given != collection_id:
        raise ValueError(f"filters name collection {given!r} and collection_id is {collection_id!r}")
    return {**(filters or {}), "collection_id": collection_id}


def search(query: str, *, top_k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None,
           min_score: float | None = None, collection_id: str | None = None) -> Call:
    body: dict[str, Any] = {"query": query, "top_k": top_k, "mode": mode, "include_embedding": False}
    filters = with_collection(filters, collection_id)
    if filters is not None:
        body["filters"] = filters
    if min_score is not None:
        body["min_score"] = min_score
    return Call("POST", "/search", lambda b, s: [SearchHit(**{k: r[k] for k in SearchHit.__dataclass_fields__})
                                                 for r in b["results"]], json=body)


def chat_body(query: str, *, conversation_id: str | None, top_k: int, filters: dict[str, Any] | None,
              stream: bool, collection_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"query": query, "top_k": top_k, "stream": stream}
    filters = with_collection(filters, collection_id)
    if conversation_id is not None:
        body["conversation_id"] = conversation_id
    if filters is not None:
        body["filters"] = filters
    return body


def chat(query: str, *, conversation_id: str | None = None, top_k: int = 5,
         filters: dict[str, Any] | None = None, collection_id: str | None = None) -> Call:
    return Call("POST", "/chat", lambda b, s: ChatAnswer(
        response=b["response"], sources=sources_from(b["sources"]), context_used=b["context_used"],
        conversation_id=b["conversation_id"], message_id=b["message_id"], answer_found=b.get("answer_found", True),
        generator=b.get("generator", ""), cited_sources=b.get("cited_sources", [])),
        json=chat_body(query, conversation_id=conversation_id, top_k=top_k, filters=filters, stream=False,
                       collection_id=collection_id))


def chat_stream(query: str, *, conversation_id: str | None = None, top_k: int = 5,
                filters: dict[str, Any] | None = None, collection_id: str | None = None) -> Call:
    """The answer as Server-Sent Events: the clients read the stream (`events.parse_event`)."""
    return Call("POST", "/chat", _none, headers={"accept": "text/event-stream"},
                json=chat_body(query, conversation_id=conversation_id, top_k=top_k, filters=filters, stream=True,
                               collection_id=collection_id))


def history(page: int = 1, limit: int = 20) -> Call:
    return Call("GET", "/history", lambda b, s: b, params={"page": page, "limit": limit})


def conversation(conversation_id: str) -> Call:
    return Call("GET", f"/history/{_segment(conversation_id)}", lambda b, s: b)


def delete_conversation(conversation_id: str) -> Call:
    return Call("DELETE", f"/history/{_segment(conversation_id)}", _none)


def create_api_key(name: str, scope: str = "read", expires_in_days: int | None = None) -> Call:
    return Call("POST", "/auth/api-keys", lambda b, s: ApiKey.from_json(b), service="auth",
                json={"name": name, "scope": scope, "expires_in_days": expires_in_days})


def list_api_keys() -> Call:
    return Call("GET", "/auth/api-keys", lambda b, s: [ApiKey.from_json(k) for k in b["keys"]], service="auth")


def revoke_api_key(key_id: str) -> Call:
    return Call("DELETE", f"/auth/api-keys/{_segment(key_id)}", _none, service="auth")


def _segment(value: str) -> str:
    """An id as one path segment: never lets `../` or `?` change the route."""
    from urllib.parse import quote

    return quote(value, safe="")
