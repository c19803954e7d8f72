"""The asynchronous client: the same routes (`calls.Call`) and token rules as `RagClient`,
on httpx.AsyncClient, API-key management included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from rag_client import calls
from rag_client.client import DEFAULT_TIMEOUT, MAX_RATE_LIMIT_RETRIES, _wait
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
from rag_client.tokens import TokenState, refresh_async


class AsyncRagClient:
    def __init__(self, rag_url: str, auth_url: str | None = None, *, api_key: str | None = None,
                 email: str | None = None, password: str | None = None, access_token: str | None = None,
                 timeout: httpx.Timeout | float = DEFAULT_TIMEOUT, http: httpx.AsyncClient | None = None,
                 max_rate_limit_retries: int = MAX_RATE_LIMIT_RETRIES) -> None:
        self.rag_url = rag_url.rstrip("/")
        self.tokens = TokenState(auth_url, api_key=api_key, email=email, password=password,
                                 access_token=access_token)
        self._http = http or httpx.AsyncClient(timeout=timeout)
        self._owns_http = http is None
        self._max_retries = max_rate_limit_retries
        # Concurrent calls share one refresh instead of each exchanging the key.
        self._refresh_lock = asyncio.Lock()

    async def __aenter__(self) -> AsyncRagClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def access_token(self, *, force: bool = False) -> str:
        async with self._refresh_lock:
            if force:
                self.tokens.invalidate()
            if self.tokens.needs_refresh():
                try:
                    await refresh_async(self.tokens, self._http)
                except httpx.TransportError as exc:
                    raise ServiceUnavailable(0, "connection_error", f"cannot reach the auth service: {exc}") from exc
            assert self.tokens.access_token is not None
            return self.tokens.access_token

    async def _run(self, call: calls.Call) -> Any:
        response = await self._send(call)
        return call.parse(response.json() if response.content else None, response.status_code)

    async def _credentials(self, call: calls.Call) -> dict[str, str]:
        if call.service == "rag":
            return {"authorization": f"Bearer {await self.access_token()}"}
        if self.tokens.needs_session:
            await self.access_token(force=True)  # signing in opens the session
        return self.tokens.session_headers()

    async def _send(self, call: calls.Call) -> httpx.Response:
        refreshed = False
        retries = 0
        while True:
            credentials = await self._credentials(call)
            try:
                response = await self._http.request(call.method, call.url(self.rag_url, self.tokens.auth_url),
                                                    headers={**call.headers, **credentials}, **call.request_options())
            except httpx.TransportError as exc:
                raise ServiceUnavailable(0, "connection_error", f"cannot reach the {call.service} service: {exc}") from exc
            if response.status_code == 401 and not refreshed and self.tokens.can_refresh:
                refreshed = True
                async with self._refresh_lock:
                    if call.service == "auth":
                        self.tokens.invalidate(session=True)
                    elif credentials["authorization"] == f"Bearer {self.tokens.access_token}":  # not refreshed meanwhile
                        self.tokens.invalidate()
                continue
            if response.status_code == 429 and retries < self._max_retries:
                retries += 1
                await asyncio.sleep(_wait(response, retries))
                continue
            if response.status_code >= 400:
                raise error_from_response(response)
            return response

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
        body = calls.chat_body(query, conversation_id=conversation_id, top_k=top_k, filters=filters, stream=True,
                               collection_id=collection_id)
        for attempt in range(2):
            headers = {"authorization": f"Bearer {await self.access_token(force=attempt > 0)}",
                       "accept": "text/event-stream"}
            async with aconnect_sse(self._http, "POST", f"{self.rag_url}/chat", json=body, headers=headers) as source:
                response = source.response
                if response.status_code == 401 and attempt == 0 and self.tokens.can_refresh:
                    continue
                if response.status_code >= 400:
                    await response.aread()
                    raise error_from_response(response)
                async for sse in source.aiter_sse():
                    event = parse_event(sse.event, sse.data)
                    if event is not None:
                        yield event
                return

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
