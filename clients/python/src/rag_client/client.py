"""The synchronous client. Every route method is one `calls.Call` run by `_run`, which adds
the bearer token, refreshes it before `exp` and once on a 401, waits out 429s (Retry-After,
a bounded number of times) and turns error bodies into exceptions with the service's code."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
from httpx_sse import connect_sse

from rag_client import calls
from rag_client.errors import ServiceUnavailable, error_from_response
from rag_client.events import parse_event
from rag_client.models import (
    ApiKey,
    BatchFile,
    BatchResult,
    BatchText,
    ChatAnswer,
    ChatEvent,
    Collection,
    Document,
    DocumentPage,
    IngestionSummary,
    SavedDocument,
    SearchHit,
    UploadedDocument,
)
from rag_client.tokens import TokenState, refresh_sync

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Waiting out rate limits: at most this many retries, each at most MAX_RETRY_WAIT seconds.
MAX_RATE_LIMIT_RETRIES = 5
MAX_RETRY_WAIT = 60.0


class RagClient:
    """`RagClient(rag_url, auth_url, api_key=...)`, or `email=..., password=...`, or a ready
    `access_token=...` (not refreshed). `from_env()` reads RAG_URL, AUTH_URL and RAG_API_KEY
    (or RAG_EMAIL + RAG_PASSWORD). Use as a context manager, or call close()."""

    def __init__(self, rag_url: str, auth_url: str | None = None, *, api_key: str | None = None,
                 email: str | None = None, password: str | None = None, access_token: str | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, http: httpx.Client | None = None,
                 max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES) -> None:
        self.rag_url = rag_url.rstrip("/")
        self.tokens = TokenState(auth_url, api_key=api_key, email=email, password=password,
                                 access_token=access_token)
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None
        self._max_retries = max_rate_limit_retries

    @classmethod
    def from_env(cls, **overrides: Any) -> RagClient:
        env = os.environ
        options: dict[str, Any] = {"rag_url": env.get("RAG_URL", "http://127.0.0.1:8000"),
                                   "auth_url": env.get("AUTH_URL", "http://127.0.0.1:3001")}
        if env.get("RAG_API_KEY"):
            options["api_key"] = env["RAG_API_KEY"]
        elif env.get("RAG_EMAIL"):
            options.update(email=env["RAG_EMAIL"], password=env.get("RAG_PASSWORD"))
        options.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**options)

    def __enter__(self) -> RagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    # --- tokens --------------------------------------------------------------------------

    def access_token(self, *, force: bool = False) -> str:
        """The current access JWT, refreshed first when close to `exp` (or when forced)."""
        if force:
            self.tokens.invalidate()
        if self.tokens.needs_refresh():
            try:
                refresh_sync(self.tokens, self._http)
            except httpx.TransportError as exc:
                raise ServiceUnavailable(0, "connection_error", f"cannot reach the auth service: {exc}") from exc
        assert self.tokens.access_token is not None
        return self.tokens.access_token

    # --- plumbing ------------------------------------------------------------------------

    def _run(self, call: calls.Call) -> Any:
        response = self._send(call)
        body = response.json() if response.content else None
        return call.parse(body, response.status_code)

    def _credentials(self, call: calls.Call) -> dict[str, str]:
        if call.service == "rag":
            return {"authorization": f"Bearer {self.access_token()}"}
        if self.tokens.needs_session:
            self.access_token(force=True)  # signing in opens the session
        return self.tokens.session_headers()

    def _send(self, call: calls.Call) -> httpx.Response:
        refreshed = False
        retries = 0
        while True:
            headers = {**call.headers, **self._credentials(call)}
            try:
                response = self._http.request(call.method, call.url(self.rag_url, self.tokens.auth_url),
                                              headers=headers, **call.request_options())
            except httpx.TransportError as exc:
                raise ServiceUnavailable(0, "connection_error", f"cannot reach the {call.service} service: {exc}") from exc
            if response.status_code == 401 and not refreshed and self.tokens.can_refresh:
                refreshed = True
                self.tokens.invalidate(session=call.service == "auth")
                continue
            if response.status_code == 429 and retries < self._max_retries:
                retries += 1
                time.sleep(_wait(response, retries))
                continue
            if response.status_code >= 400:
                raise error_from_response(response)
            return response

    # --- documents -----------------------------------------------------------------------

    # `collection_id`: "personal" (the default when None) or a collection's id (list_collections).

    def save(self, title: str, content: str, metadata: dict[str, Any] | None = None, *,
             collection_id: str | None = None) -> SavedDocument:
        return self._run(calls.save(title, content, metadata, collection_id=collection_id))

    def upload(self, files: Sequence[calls.FileInput], *, title: str | None = None,
               metadata: dict[str, Any] | None = None, collection_id: str | None = None) -> list[UploadedDocument]:
        return self._run(calls.upload(files, title=title, metadata=metadata, collection_id=collection_id))

    def batch(self, items: Sequence[BatchText | BatchFile], *, collection_id: str | None = None) -> BatchResult:
        """Many documents in one request (at most the service's MAX_BATCH_ITEMS, 100 by
        default), all into one collection; one result per item, in order. A bad item is its
        own `error` result."""
        return self._run(calls.batch(items, collection_id=collection_id))

    def list_documents(self, page: int = 1, limit: int = 20, *, collection_id: str | None = None) -> DocumentPage:
        """Every document the caller can read (its own and its organizations'), or one collection's."""
        return self._run(calls.list_documents(page, limit, collection_id=collection_id))

    def iter_documents(self, limit: int = 100, *, collection_id: str | None = None) -> Iterator[Document]:
        page = 1
        while True:
            result = self.list_documents(page, limit, collection_id=collection_id)
            yield from result.documents
            if page >= result.pages:
                return
            page += 1

    def get_document(self, document_id: str) -> Document:
        return self._run(calls.get_document(document_id))

    def delete_document(self, document_id: str) -> None:
        self._run(calls.delete_document(document_id))

    def move_document(self, document_id: str, collection_id: str) -> Document:
        """Into another collection (write access to both); re-indexed there."""
        return self._run(calls.move_document(document_id, collection_id))

    def summary(self) -> IngestionSummary:
        return self._run(calls.summary())

    # --- collections ---------------------------------------------------------------------

    def list_collections(self) -> list[Collection]:
        """Personal ones first (the default, id "personal", first), then the organizations'."""
        return self._run(calls.list_collections())

    def create_collection(self, name: str, organization_id: str | None = None) -> Collection:
        """Personal, or in an organization of the caller's token where it is admin or owner."""
        return self._run(calls.create_collection(name, organization_id))

    def get_collection(self, collection_id: str) -> Collection:
        return self._run(calls.get_collection(collection_id))

    def rename_collection(self, collection_id: str, name: str) -> Collection:
        return self._run(calls.rename_collection(collection_id, name))

    def delete_collection(self, collection_id: str) -> None:
        """Only an empty one (InvalidRequest `collection_not_empty` otherwise)."""
        self._run(calls.delete_collection(collection_id))

    # --- search, chat, history -----------------------------------------------------------

    # Without `collection_id`, search and chat read every collection the caller can read.

    def search(self, query: str, *, top_k: int = 5, mode: str = "hybrid", filters: dict[str, Any] | None = None,
               min_score: float | None = None, collection_id: str | None = None) -> list[SearchHit]:
        return self._run(calls.search(query, top_k=top_k, mode=mode, filters=filters, min_score=min_score,
                                      collection_id=collection_id))

    def chat(self, query: str, *, conversation_id: str | None = None, top_k: int = 5,
             filters: dict[str, Any] | None = None, collection_id: str | None = None) -> ChatAnswer:
        return self._run(calls.chat(query, conversation_id=conversation_id, top_k=top_k, filters=filters,
                                    collection_id=collection_id))

    def chat_stream(self, query: str, *, conversation_id: str | None = None, top_k: int = 5,
                    filters: dict[str, Any] | None = None, collection_id: str | None = None) -> Iterator[ChatEvent]:
        """SourcesEvent, then DeltaEvent..., then DoneEvent; an `error` event raises RagError."""
        body = calls.chat_body(query, conversation_id=conversation_id, top_k=top_k, filters=filters, stream=True,
                               collection_id=collection_id)
        for attempt in range(2):
            headers = {"authorization": f"Bearer {self.access_token(force=attempt > 0)}",
                       "accept": "text/event-stream"}
            with connect_sse(self._http, "POST", f"{self.rag_url}/chat", json=body, headers=headers) as source:
                response = source.response
                if response.status_code == 401 and attempt == 0 and self.tokens.can_refresh:
                    continue
                if response.status_code >= 400:
                    response.read()
                    raise error_from_response(response)
                for sse in source.iter_sse():
                    event = parse_event(sse.event, sse.data)
                    if event is not None:
                        yield event
                return

    def history(self, page: int = 1, limit: int = 20) -> dict[str, Any]:
        return self._run(calls.history(page, limit))

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return self._run(calls.conversation(conversation_id))

    def delete_conversation(self, conversation_id: str) -> None:
        self._run(calls.delete_conversation(conversation_id))

    # --- API keys (need an email/password sign-in: a key cannot manage keys) -------------

    def create_api_key(self, name: str, scope: str = "read", expires_in_days: int | None = None) -> ApiKey:
        return self._run(calls.create_api_key(name, scope, expires_in_days))

    def list_api_keys(self) -> list[ApiKey]:
        return self._run(calls.list_api_keys())

    def revoke_api_key(self, key_id: str) -> None:
        self._run(calls.revoke_api_key(key_id))


def _wait(response: httpx.Response, attempt: int) -> float:
    advice = error_from_response(response).retry_after
    return min(MAX_RETRY_WAIT, advice if advice is not None else float(2 ** attempt))
