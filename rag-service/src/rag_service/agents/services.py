"""The REST routes' services, for one verified caller, outside FastAPI's dependency injection.

The MCP tools (agents/mcp_server.py) and the OpenAI-compatible API (agents/openai_api.py)
reach the documents through this class only, and it does exactly what the REST route of the
same operation does, in the same order: the write scope first (a refused call spends no
budget), then the route's rate-limit budget (cheap or costly, keyed by the caller), then the
service built by the route's own dependency function, scoped by the caller's `Access` (the one
access filter). Inputs are validated by the REST route's own request models, so the limits are
the same too. An agent can therefore never see or do more than the same user's REST call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rag_service.auth.tokens import CurrentUser
from rag_service.chat.api import get_chat_service
from rag_service.chat.service import ChatService
from rag_service.collections.api import get_collection_service
from rag_service.collections.schemas import CollectionOut
from rag_service.deps import require_write_scope
from rag_service.documents.api import get_document_reads, get_document_service, get_intake
from rag_service.embeddings.api import get_embedding_service
from rag_service.documents.schemas import DocumentDetail, DocumentList, DocumentSummary, SaveDocumentRequest, save_message
from rag_service.documents.service import DocumentService
from rag_service.ratelimit import Budget
from rag_service.runtime import Runtime
from rag_service.search.api import get_search_service
from rag_service.search.schemas import SearchRequest
from rag_service.search.service import SearchResult
from rag_service.storage.access import Access


class AgentServices:
    """What one verified caller may do, as the REST routes allow it."""

    def __init__(self, runtime: Runtime, user: CurrentUser) -> None:
        self.runtime = runtime
        self.user = user
        self.access = Access(user.id, user.orgs)

    async def _spend(self, budget: Budget) -> None:
        await self.runtime.rate_limiter.hit(budget, self.user.id)

    @asynccontextmanager
    async def _documents(self) -> AsyncIterator[DocumentService]:
        r = self.runtime
        async with r.sessionmaker() as session:
            yield await get_document_service(session, r.vector_store, r.sparse_encoder, r.embedder, r.settings,
                                             r.ingestion_gate)

    # --- the operations (REST route named beside each) ----------------------------------

    async def search(self, request: SearchRequest) -> SearchResult:
        """POST /search (costly)."""
        await self._spend("costly")
        r = self.runtime
        service = await get_search_service(r.vector_store, r.sparse_encoder, r.embedder, r.settings)
        return await service.search(self.access, request.query, top_k=request.top_k, filters=request.filters,
                                    mode=request.mode, min_score=request.min_score,
                                    include_embedding=request.include_embedding)

    async def chat(self) -> ChatService:
        """POST /chat (costly): the chat service, to `prepare(access, ChatInput)` (POST /chat's
        limits), then stream `events(...)` or `collect(...)` as the route does."""
        await self._spend("costly")
        r = self.runtime
        return await get_chat_service(r.vector_store, r.sparse_encoder, r.embedder, r.generator, r.sessionmaker,
                                      r.settings, r.ingestion_gate)

    async def list_documents(self, *, page: int, limit: int, collection_id: str | None) -> DocumentList:
        """GET /documents (cheap)."""
        await self._spend("cheap")
        async with self.runtime.sessionmaker() as session:
            reads = await get_document_reads(session, self.runtime.settings)
            result = await reads.list(self.access, page=page, limit=limit, collection_id=collection_id)
        return DocumentList(documents=[DocumentSummary.of(d) for d in result.documents],
                            total=result.total, page=result.page, pages=result.pages)

    async def get_document(self, document_id: str) -> DocumentDetail:
        """GET /documents/{id} (cheap)."""
        await self._spend("cheap")
        async with self.runtime.sessionmaker() as session:
            reads = await get_document_reads(session, self.runtime.settings)
            return DocumentDetail.of(await reads.get(self.access, document_id))

    async def save_document(self, request: SaveDocumentRequest) -> dict[str, Any]:
        """POST /save-document (write scope, cheap, then the ingestion byte budget and quotas
        in the intake)."""
        await require_write_scope(self.user)
        await self._spend("cheap")
        r = self.runtime
        async with self._documents() as service:
            assert r.extraction_pool is not None  # built in Runtime.__post_init__
            intake = await get_intake(service, r.extraction_pool, r.rate_limiter, r.settings)
            stored = await intake.save(self.access, request.title, request.content, request.metadata,
                                       collection_id=request.collection_id)
        return {"document_id": stored.document.id, "created": stored.created,
                "status": stored.document.status, "message": save_message(stored.document, stored.created)}

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """POST /embed (write scope, costly), once for several texts (each within its limit)."""
        await require_write_scope(self.user)
        await self._spend("costly")
        service = await get_embedding_service(self.runtime.embedder, self.runtime.settings)
        return [await service.embed_query(text) for text in texts]

    async def list_collections(self) -> list[CollectionOut]:
        """GET /collections (cheap)."""
        await self._spend("cheap")
        async with self.runtime.sessionmaker() as session:
            service = await get_collection_service(session, self.runtime.ingestion_gate, self.runtime.settings)
            return [CollectionOut.of(view) for view in await service.list(self.access)]
