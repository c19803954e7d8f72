"""The asynchronous client: the same routes (`calls.Call`), token flow (`auth.TokenAuth`) and
retry policy (`retry.RetryPolicy`) as `RagClient`, on httpx.AsyncClient, API-key management
included."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx
from httpx_sse import EventSource

from rag_client import calls
from rag_client.auth import TokenAuth
from rag_client.client import DEFAULT_TIMEOUT, options_from_env
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


class AsyncRagClient:
    """`RagClient`'s constructor and methods, awaited. Concurrent calls share one token refresh."""

    def __init__(self, rag_url: str, auth_url: str | None = None, *, api_key: str | None = None,
                 email: str | None = None, password: str | None = None, access_token: str | None = None,
                 two_factor_code: Callable[[], str] | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, http: httpx.AsyncClient | None = None,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.rag_url = rag_url.rstrip("/")
        self.tokens = TokenState(auth_url, api_key=api_key, email=email, password=password,
                                 access_token=access_token, two_factor_code=two_factor_code, clock=clock)
        self._auth = TokenAuth(self.tokens)
        self._session_auth = self._auth.session_auth()
        self._retry = retry or RetryPolicy()
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncRagClient:
        return cls(**options_from_env(overrides))

    async def __aenter__(self) -> AsyncRagClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def access_token(self, *, force: bool = False) -> str:
        try:
            return await self._auth.async_token(self._http, force=force)
        except httpx.TransportError as exc:
            raise unreachable(exc, self.tokens.auth_url) from exc

    async def _run(self, call: calls.Call) -> Any:
        response = await self._send(call)
        return call.parse(response.json() if response.content else None, response.status_code)

    async def _send(self, call: calls.Call, *, stream: bool = False) -> httpx.Response:
        auth = self._session_auth if call.service == "auth" else self._auth

        async def attempt() -> httpx.Response:
            response = await self._http.send(call.build(self._http, self.rag_url, self.tokens.auth_url), auth=auth,
                                             stream=stream)
            if response.status_code >= 400:
                await response.aread()
                raise error_from_response(response)
            return response

        try:
            return await self._retry.acall(attempt)
        except httpx.TransportError as exc:
            raise unreachable(exc, self.tokens.auth_url) from exc

    async def save(self, title: str, content: str, metadata: dict[str, Any] | None = None, *,
                   collection_id: str | None = None) -> SavedDocument:
        return await self._run(calls.save(title, content, metadata, collection_id=collection_id))

    async def upload(self, files: Sequence[calls.FileInput], *, title: str | None = None,
                     metadata: dict[str, Any] | None = None,
                     collection_id: str | None = None) -> list[UploadedDocument]:
        return await self._run(calls.upload(files, title=title, metadata=metadata, collection_id=collection_id))

    async def batch(self, items: Sequence[BatchText | BatchFile], *, collection_id: str | None = None) -> BatchResult:
        return await self._run(calls.batch(items, collection_id=collection_id))

    async def list_documents(self, page: int = 1, limit: int = 20, *,
                             collection_id: str | None = None) -> DocumentPage:
        return await self._run(calls.list_documents(page, limit, collection_id=collection_id))

    async def iter_documents(self, limit: int = 100, *, collection_id: str | None = None) -> AsyncIterator[Document]:
        page = 1
        while True:
            result = await self.list_documents(page, limit, collection_id=collection_id)
            for document in result.documents:
                yield document
            if page >= result.pages:
                return
            page += 1

    async def get_document(self, document_id: str) -> Document:
        return await self._run(calls.get_document(document_id))

    async def delete_document(self, document_id: str) -> None:
        await self._run(calls.delete_document(document_id))

    async def move_document(self, document_id: str, collection_id: str) -> Document:
        return await self._run(calls.move_document(document_id, collection_id))

    async def summary(self) -> IngestionSummary:
        return await self._run(calls.summary())

    async def list_collections(self) -> list[Collection]:
        return await self._run(calls.list_collections())

    async def create_collection(self, name: str, organization_id: str | None = None) -> Collection:
        return await self._run(calls.create_collection(name, organization_id))

    async def get_collection(self, collection_id: str) -> Collection:
        return await self._run(calls.get_collection(collection_id))

    async def rename_collection(self, collection_id: str, name: str) -> Collection:
        return await self._run(calls.rename_collection(collection_id, name))

    async def delete_collection(self, collection_id: str) -> None:
        await self._run(calls.delete_collection(collection_id))

    async def search(self, query: str, *, top_k: int = 5, mode: str = "hybrid",
                     filters: dict[str, Any] | None = None, min_score: float | None = None,
                     collection_id: str | None = None) -> list[SearchHit]:
        return await self._run(calls.search(query, top_k=top_k, mode=mode, filters=filters, min_score=min_score,
                                            collection_id=collection_id))

    async def chat(self, query: str, *, conversation_id: str | None = None, top_k: int = 5,
                   filters: dict[str, Any] | None = None, collection_id: str | None = None) -> ChatAnswer:
        return await self._run(calls.chat(query, conversation_id=conversation_id, top_k=top_k, filters=filters,
                                          collection_id=collection_id))

    async def chat_stream(self, query: str, *, conversation_id: str | None = None, top_k: int = 5,
                          filters: dict[str, Any] | None = None,
                          collection_id: str | None = None) -> AsyncIterator[ChatEvent]:
        response = await self._send(calls.chat_stream(query, conversation_id=conversation_id, top_k=top_k,
                                                      filters=filters, collection_id=collection_id), stream=True)
        try:
            async for sse in EventSource(response).aiter_sse():
                event = parse_event(sse.event, sse.data)
                if event is not None:
                    yield event
        finally:
            await response.aclose()

    async def history(self, page: int = 1, limit: int = 20) -> dict[str, Any]:
        return await self._run(calls.history(page, limit))

    async def conversation(self, conversation_id: str) -> dict[str, Any]:
        return await self._run(calls.conversation(conversation_id))

    async def delete_conversation(self, conversation_id: str) -> None:
        await self._run(calls.delete_conversation(conversation_id))

    async def create_api_key(self, name: str, scope: str = "read", expires_in_days: int | None = None) -> ApiKey:
        return await self._run(calls.create_api_key(name, scope, expires_in_days))

    async def list_api_keys(self) -> list[ApiKey]:
        return await self._run(calls.list_api_keys())

    async def revoke_api_key(self, key_id: str) -> None:
        await self._run(calls.revoke_api_key(key_id))
