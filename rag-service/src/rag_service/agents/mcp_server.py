"""The MCP server at `/mcp` (official `mcp` SDK, streamable HTTP): the caller's documents as
tools for agents (Claude Desktop, Cursor, IDE agents, agent frameworks).

Tools: `search`, `ask` (a cited answer, its text streamed as progress notifications when the
client sends a progress token), `list_documents`, `get_document`, `save_document` (write
scope), `list_collections`. Each is a thin adapter over `AgentServices` (agents/services.py):
the REST route's scope check, rate-limit budget, request model and service, scoped by the
caller's `Access`. A service error becomes a tool error (`isError: true`) whose text starts
with its code (`insufficient_scope: …`, `not_found: …`, `rate_limited: …`).

Authentication happens before the SDK sees the request (agents/mcp_auth.py): the same
bearer credentials as the REST API (access JWT or API key, auth/bearer.py). Without one the
answer is 401 with `WWW-Authenticate: Bearer resource_metadata="…"` pointing at this
service's RFC 9728 metadata (agents/resource_metadata.py), which names the auth-service as
the authorization server, as the MCP authorization spec describes.

The server is stateless (`stateless_http=True`): every POST carries its own credentials and is
served on its own, so no MCP session can be picked up by another caller, and replicas need no
session affinity.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import ToolAnnotations
from pydantic import Field, ValidationError

from rag_service.agents.mcp_outputs import (
    AskOutput,
    AskSource,
    CollectionItem,
    CollectionsOutput,
    DocumentListOutput,
    DocumentOut,
    DocumentOutput,
    SaveOutput,
    SearchHit,
    SearchOutput,
)
from rag_service.agents.services import AgentServices
from rag_service.auth.tokens import CurrentUser
from rag_service.chat.records import DEFAULT_CHAT_TOP_K, DeltaEvent, SourcesEvent
from rag_service.chat.schemas import ChatRequest
from rag_service.chat.service import SAME_DOCUMENT_CHUNKS
from rag_service.collections.records import MAX_COLLECTION_ID_CHARS
from rag_service.documents.schemas import SaveDocumentRequest
from rag_service.errors import AppError, describe_validation_errors
from rag_service.runtime import Runtime
from rag_service.search.filters import SearchFilters
from rag_service.search.schemas import SearchRequest
from rag_service.storage.models import DEFAULT_COLLECTION

log = logging.getLogger(__name__)

# Where the authenticated caller travels from McpAuthentication (agents/mcp_auth.py) to the
# tools: the ASGI scope's `state`, which the SDK hands back as the request of the tool call.
USER_STATE_KEY = "rag_user"
RUNTIME_STATE_KEY = "rag_runtime"

# get_document returns at most this much of a document's text unless asked for more.
DEFAULT_DOCUMENT_CHARS = 20_000
MAX_DOCUMENT_CHARS = 1_000_000
MAX_LIST_LIMIT = 100

INSTRUCTIONS = (
    "Private, permission-aware documents of the signed-in user (and their organizations). "
    "Use `search` to find passages, `ask` for an answer that cites its sources as [n], "
    "`list_documents`/`get_document` to browse and read, `list_collections` to see where documents live, "
    "and `save_document` (needs a write-scoped key) to add text. Every tool only sees what this user may read."
)

CollectionArg = Annotated[
    str | None,
    Field(default=None, min_length=1, max_length=MAX_COLLECTION_ID_CHARS,
          description='Only this collection: "personal" (the default one) or a collection id from '
                      "list_collections. Omit to use every collection the user can read."),
]


# --- the server ----------------------------------------------------------------------------


def services_of(ctx: Context) -> AgentServices:
    """The verified caller of this tool call (put there by McpAuthentication)."""
    request = ctx.request_context.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    user, runtime = state.get(USER_STATE_KEY), state.get(RUNTIME_STATE_KEY)
    if not isinstance(user, CurrentUser) or not isinstance(runtime, Runtime):
        # Unreachable through /mcp (McpAuthentication refuses first); fail closed regardless.
        raise ToolError("unauthorized: no verified caller")
    return AgentServices(runtime, user)


def tool_error(exc: AppError) -> ToolError:
    return ToolError(f"{exc.code}: {exc.message}")


def invalid_arguments(exc: ValidationError) -> ToolError:
    message, _ = describe_validation_errors(exc.errors())
    return ToolError(f"validation_error: {message}")


def _document(d: Any) -> dict[str, Any]:
    return {"id": d.id, "title": d.title, "status": d.status, "chunk_count": d.chunk_count,
            "collection_id": d.collection_id, "organization_id": d.organization_id, "metadata": d.metadata,
            "created_at": d.created_at.isoformat()}


def build_mcp_server() -> MCPServer:
    # The SDK's constructor calls logging.basicConfig (a rich handler on the root logger at
    # INFO): that would print every library's INFO lines (httpx's request URLs) beside this
    # service's JSON logs (observability.py). The root logger is put back as it was.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        server = MCPServer(name="rag-service", title="Private documents (RAG)", instructions=INSTRUCTIONS,
                           version="0.1.0")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    read_only = ToolAnnotations(readOnlyHint=True, openWorldHint=False)

    @server.tool(
        description=(
            "Search the user's documents and return the best-matching passages (chunks), best first. "
            "Use it to find facts or where something is written; use `ask` for a written answer. "
            "mode: hybrid (meaning + keywords, the default), dense (meaning only) or keyword (exact words)."
        ),
        annotations=read_only,
    )
    async def search(
        query: Annotated[str, Field(min_length=1, description="What to look for, in natural language or keywords")],
        ctx: Context,
        collection: CollectionArg = None,
        mode: Annotated[Literal["hybrid", "dense", "keyword"], Field(description="Retrieval mode")] = "hybrid",
        top_k: Annotated[int, Field(description="How many passages to return (1 to the service's max_search_top_k)")] = 5,
    ) -> SearchOutput:
        services = services_of(ctx)
        try:
            request = SearchRequest(query=query, top_k=top_k, mode=mode, include_embedding=False,
                                    filters=SearchFilters(collection_id=collection) if collection else None)
            result = await services.search(request)
        except ValidationError as exc:
            raise invalid_arguments(exc) from None
        except AppError as exc:
            raise tool_error(exc) from None
        return SearchOutput(results=[
            SearchHit(document_id=h.document_id, title=h.title, chunk_index=h.chunk_index, text=h.text,
                      score=h.score, metadata=h.metadata)
            for h in result.hits
        ])

    @server.tool(
        description=(
            "Answer a question from the user's documents. The answer cites its sources as [n] (or [n, m] when "
            "two say the same), where n is a source's `number`; it says so when the documents do not contain "
            "the answer (nothing is invented). "
            "The text is streamed as progress notifications when the client sends a progress token. "
            "Each call is saved in the user's chat history."
        ),
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False),
    )
    async def ask(
        question: Annotated[str, Field(min_length=1, description="The question to answer")],
        ctx: Context,
        collection: CollectionArg = None,
        top_k: Annotated[int, Field(description=(
            "How many best passages to answer from (1 to the service's max_chat_top_k); "
            f"up to {SAME_DOCUMENT_CHUNKS} more passages of their documents are read too"))
        ] = DEFAULT_CHAT_TOP_K,
    ) -> AskOutput:
        services = services_of(ctx)
        try:
            request = ChatRequest(query=question, top_k=top_k, stream=True,
                                  filters=SearchFilters(collection_id=collection) if collection else None).as_input()
            chat = await services.chat()
            prepared = await chat.prepare(services.access, request)
            pieces: list[str] = []
            events = chat.events(prepared)
            try:
                async for event in events:
                    if isinstance(event, SourcesEvent):
                        await ctx.report_progress(0, None, f"found {len(event.sources)} source(s)")
                    elif isinstance(event, DeltaEvent):
                        pieces.append(event.text)
                        await ctx.report_progress(len(pieces), None, event.text)
            finally:
                await events.aclose()
        except ValidationError as exc:
            raise invalid_arguments(exc) from None
        except AppError as exc:
            raise tool_error(exc) from None
        return AskOutput(
            answer="".join(pieces),
            sources=[AskSource(number=s.number, document_id=s.document_id, title=s.title,
                               chunk_index=s.chunk_index, snippet=s.snippet) for s in prepared.sources],
            conversation_id=prepared.turn.conversation_id,
        )

    @server.tool(
        description="List the documents the user can read (its own and its organizations'), newest first, "
                    "a page at a time. Use the ids with `get_document`.",
        annotations=read_only,
    )
    async def list_documents(
        ctx: Context,
        collection: CollectionArg = None,
        page: Annotated[int, Field(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
        limit: Annotated[int, Field(ge=1, le=MAX_LIST_LIMIT, description="Documents per page")] = 20,
    ) -> DocumentListOutput:
        services = services_of(ctx)
        try:
            result = await services.list_documents(page=page, limit=min(limit, services.runtime.settings.max_page_size),
                                                   collection_id=collection)
        except AppError as exc:
            raise tool_error(exc) from None
        return DocumentListOutput(documents=[DocumentOut(**_document(d)) for d in result.documents],
                                  total=result.total, page=result.page, pages=result.pages)

    @server.tool(
        description="Read one document (its text and details) by the id from `list_documents`, `search` or `ask`. "
                    "Long texts are cut at max_chars (see `truncated`).",
        annotations=read_only,
    )
    async def get_document(
        document_id: Annotated[str, Field(min_length=1, max_length=64, description="The document's id")],
        ctx: Context,
        max_chars: Annotated[int, Field(ge=1, le=MAX_DOCUMENT_CHARS,
                                        description="Return at most this many characters of the text")]
            = DEFAULT_DOCUMENT_CHARS,
    ) -> DocumentOutput:
        services = services_of(ctx)
        try:
            detail = await services.get_document(document_id)
        except AppError as exc:
            raise tool_error(exc) from None
        return DocumentOutput(**_document(detail), content=detail.content[:max_chars],
                              content_chars=len(detail.content), truncated=len(detail.content) > max_chars)

    @server.tool(
        description=(
            "Save a text (plain text or Markdown) as a new document, indexed for search at once. Needs a "
            "write-scoped token or API key. Saving the same text again returns the existing document."
        ),
        annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=True,
                                    openWorldHint=False),
    )
    async def save_document(
        title: Annotated[str, Field(min_length=1, description="Shown in listings and search results")],
        content: Annotated[str, Field(min_length=1, description="The text to save")],
        ctx: Context,
        collection: Annotated[str, Field(min_length=1, max_length=MAX_COLLECTION_ID_CHARS,
                                         description='"personal" (the default) or a collection id the user '
                                                     "can write to (see list_collections)")] = DEFAULT_COLLECTION,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="Optional JSON object; top-level scalars can later be used as search filters")] = None,
    ) -> SaveOutput:
        services = services_of(ctx)
        try:
            request = SaveDocumentRequest(title=title, content=content, metadata=metadata, collection_id=collection)
            return SaveOutput(**await services.save_document(request))
        except ValidationError as exc:
            raise invalid_arguments(exc) from None
        except AppError as exc:
            raise tool_error(exc) from None

    @server.tool(
        description="List the collections the user can read (its default `personal` one, its other ones, then "
                    "its organizations'), with whether it may write to each.",
        annotations=read_only,
    )
    async def list_collections(ctx: Context) -> CollectionsOutput:
        services = services_of(ctx)
        try:
            collections = await services.list_collections()
        except AppError as exc:
            raise tool_error(exc) from None
        return CollectionsOutput(collections=[
            CollectionItem(id=c.id, name=c.name, organization_id=c.organization_id, role=c.role,
                           can_write=c.can_write, is_default=c.is_default, document_count=c.document_count)
            for c in collections
        ])

    return server


def build_session_manager(server: MCPServer) -> StreamableHTTPSessionManager:
    """Stateless streamable HTTP, SSE responses (so `ask` can stream progress).

    The SDK's DNS-rebinding guard (a Host/Origin allow-list) is off: it protects servers that
    trust any local caller, while every request here needs a bearer credential a rebinding
    page does not have; browsers' origins are the CORS middleware's business (main.py)."""
    server.streamable_http_app(stateless_http=True, json_response=False,
                               transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    return server.session_manager


class McpEndpoint:
    """The MCP server, and the session manager of the app's current lifespan (a session
    manager runs once; an app's lifespan may run again, e.g. under a test harness)."""

    def __init__(self) -> None:
        self.server = build_mcp_server()
        self.sessions: StreamableHTTPSessionManager | None = None

    async def serve(self, stop: asyncio.Event) -> None:
        """Runs until `stop` is set, in a task of its own: the manager's task group must be
        entered and left in one task (the lifespan may start and end in different ones)."""
        sessions = build_session_manager(self.server)
        async with sessions.run():
            self.sessions = sessions
            try:
                await stop.wait()
            finally:
                self.sessions = None
