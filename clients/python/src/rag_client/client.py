"""The synchronous client. Every route method is one `calls.Call`, sent with the token flow
(`auth.TokenAuth`: the bearer token, refreshed before `exp` and once on a 401) under the retry
policy (`retry.RetryPolicy`: 429s waited out); error bodies become exceptions with the
service's code. `AsyncRagClient` (aio.py) sends the same calls with the same flow and policy."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
from httpx_sse import EventSource

from rag_client import calls
from rag_client.auth import TokenAuth
from rag_client.errors import error_from_response, unreachable
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
from rag_client.retry import RetryPolicy
from rag_client.tokens import TokenState

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def options_from_env(overrides: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from RAG_URL, AUTH_URL and RAG_API_KEY (or RAG_EMAIL +
    RAG_PASSWORD); `overrides` that are not None win."""
    env = os.environ
    options: dict[str, Any] = {"rag_url": env.get("RAG_URL", "http://127.0.0.1:8000"),
                               "auth_url": env.get("AUTH_URL", "http://127.0.0.1:3001")}
    if env.get("RAG_API_KEY"):
        options["api_key"] = env["RAG_API_KEY"]
    elif env.get("RAG_EMAIL"):
        options.update(email=env["RAG_EMAIL"], password=env.get("RAG_PASSWORD"))
    options.update({k: v for k, v in overrides.items() if v is not None})
    return options


class RagClient:
    """`RagClient(rag_url, auth_url, api_key=...)`, or `email=..., password=...`, or a ready
    `access_token=...` (not refreshed). `from_env()` reads RAG_URL, AUTH_URL and RAG_API_KEY
    (or RAG_EMAIL + RAG_PASSWORD). Use as a context manager, or call close().

    `two_factor_code`: for an account with two-factor codes, a callable returning the current
    code of its authenticator app (or a backup code), e.g. `pyotp.TOTP(secret).now`; called at
    each sign-in, from the thread (or, in `AsyncRagClient`, on the event loop) that needs the token.

    `retry`: how 429 answers are waited out. `clock`: seconds, for the tokens' lifetimes
    (monotonic by default). Safe to share between threads."""

    def __init__(self, rag_url: str, auth_url: str | None = None, *, api_key: str | None = None,
                 email: str | None = None, password: str | None = None, access_token: str | None = None,
                 two_factor_code: Callable[[], str] | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, http: httpx.Client | None = None,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rag_url = rag_url.rstrip("/")
        self.tokens = TokenState(auth_url, api_key=api_key, email=email, password=password,
                                 access_token=access_token, two_factor_code=two_factor_code, clock=clock)
        self._auth = TokenAuth(self.tokens)
        self._session_auth = self._auth.session_auth()
        self._retry = retry or RetryPolicy()
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    @classmethod
    def from_env(cls, **overrides: Any) -> RagClient:
        return cls(**options_from_env(overrides))

    def __enter__(self) -> RagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def access_token(self, *, force: bool = False) -> str:
        """The current access JWT, refreshed first when close to `exp` (or when forced)."""
        try:
            return self._auth.sync_token(self._http, force=force)
        except httpx.TransportError as exc:
            raise unreachable(exc, self.tokens.auth_url) from exc

    # --- plumbing ------------------------------------------------------------------------

    def _run(self, call: calls.Call) -> Any:
        response = self._send(call)
        return call.parse(response.json() if response.content else None, response.status_code)

    def _send(self, call: calls.Call, *, stream: bool = False) -> httpx.Response:
        """The answer to `call` (2xx), 429s waited out; unread when `stream` (the caller closes it)."""
        auth = self._session_auth if call.service == "auth" else self._auth

        def attempt() -> httpx.Response:
            response = self._http.send(call.build(self._http, self.rag_url, self.tokens.auth_url), auth=auth,
                                       stream=stream)
            if response.status_code >= 400:
                response.read()
                raise error_from_response(response)
            return response

        try:
            return self._retry.call(attempt)
        except httpx.TransportError as exc:
            raise unreachable(exc, self.tokens.auth_url) from exc

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
        response = self._send(calls.chat_stream(query, conversation_id=conversation_id, top_k=top_k,
                                                filters=filters, collection_id=collection_id), stream=True)
        try:
            for sse in EventSource(response).iter_sse():
                event = parse_event(sse.event, sse.data)
                if event is not None:
                    yield event
        finally:
            response.close()

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
