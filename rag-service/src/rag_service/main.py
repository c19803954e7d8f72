"""The FastAPI application: `create_app(settings, runtime)` and `run()` (uvicorn).

Every error leaves as JSON `{"error": {"code", "message", "request_id"}}` (error_handlers.py).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.routing import Route

from rag_service.agents import openai_api, resource_metadata
from rag_service.agents.mcp_auth import McpAuthentication
from rag_service.agents.mcp_server import McpEndpoint
from rag_service.agents.resource_metadata import MCP_PATH
from rag_service.auth import api as auth_api
from rag_service.accounts.consumer import AccountEvents
from rag_service.chat import api as chat_api
from rag_service.config import Settings, get_settings
from rag_service.deps import runtime_of_scope
from rag_service.collections import api as collections_api
from rag_service.documents import api as documents_api
from rag_service.embeddings import api as embeddings_api
from rag_service.documents.batch_request import batch_body_bytes
from rag_service.documents.indexing import wait_for_running
from rag_service.documents.maintenance import repair_interrupted_ingestions, repair_periodically
from rag_service.error_handlers import install_exception_handlers
from rag_service.errors import error_responses
from rag_service import health
from rag_service.history import api as history_api
from rag_service.http_hardening import SecurityHeadersMiddleware, uvicorn_options
from rag_service.observability import (
    REQUEST_ID_HEADER,
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    configure_logging,
    setup_metrics,
)
from rag_service.runtime import Runtime, build_runtime
from rag_service.search import api as search_api
from rag_service.storage.db import run_migrations

log = logging.getLogger(__name__)

# Shutdown: how long cancelled ingestions get to release their claims (a few SQL statements).
INGESTION_RELEASE_WAIT_S = 3.0
# Multipart framing and form fields on top of the largest allowed upload.
BODY_LIMIT_MARGIN_BYTES = 64 * 1024

def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> FastAPI:
    """Build the app. With `runtime` given, the caller owns it (tests); otherwise the lifespan
    migrates the database, builds the runtime and closes it on shutdown."""
    settings = settings or (runtime.settings if runtime else get_settings())
    configure_logging(settings.log_level)
    # The MCP server (agents/mcp_server.py): one per app, its session manager runs in the lifespan.
    mcp = McpEndpoint()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = runtime is None
        active = runtime
        periodic_repair: asyncio.Task[Any] | None = None
        account_events: AccountEvents | None = None
        if active is None:
            await asyncio.to_thread(run_migrations, settings)
            active = await build_runtime(settings)
            try:
                await repair_interrupted_ingestions(active.documents, active.started_at)
            except Exception as exc:
                # Those documents stay claimed-but-stale and the periodic pass retries them.
                # Type and stack only: database messages can quote users' values.
                log.error("repairing interrupted ingestions failed: %s\n%s", type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)))
            periodic_repair = asyncio.create_task(repair_periodically(active.documents, active.started_at))
            # Erasure of deleted accounts and the staleness signal (accounts/consumer.py).
            account_events = AccountEvents.start(active)
        app.state.runtime = active
        mcp_stop = asyncio.Event()
        mcp_task = asyncio.create_task(mcp.serve(mcp_stop))
        try:
            yield
        finally:
            # uvicorn has cancelled the requests still running (after SHUTDOWN_GRACE_SECONDS):
            # let interrupted ingestions release their claims before the database closes.
            await wait_for_running(INGESTION_RELEASE_WAIT_S)
            mcp_stop.set()
            await mcp_task
            if periodic_repair is not None:
                periodic_repair.cancel()
                await asyncio.gather(periodic_repair, return_exceptions=True)
            if account_events is not None:
                await account_events.aclose()
            if owned:
                await active.aclose()

    docs_on = settings.api_docs_on
    app = FastAPI(
        title="rag-service",
        version="0.1.0",
        summary="Private documents, hybrid search and cited chat behind Better Auth JWTs",
        lifespan=lifespan,
        # Off in production unless API_DOCS_ENABLED=true: the schema maps every route.
        docs_url="/docs" if docs_on else None,
        redoc_url="/redoc" if docs_on else None,
        openapi_url="/openapi.json" if docs_on else None,
    )
    if runtime is not None:
        app.state.runtime = runtime

    install_exception_handlers(app)
    app.include_router(health.router)
    # Every other route needs a token, may be rate limited and reaches a dependency: the
    # error statuses they share are documented once here (route-specific ones in api.py).
    for router in (auth_api.router, collections_api.router, embeddings_api.router, documents_api.router,
                   search_api.router, chat_api.router, history_api.router):
        app.include_router(router, responses=error_responses(400, 401, 403, 413, 422, 429, 503))
    # Agents and OpenAI-compatible clients (agents/): /v1, the MCP server and its OAuth metadata.
    # /v1 speaks OpenAI's protocol (its schema and error shape are OpenAI's, checked with the
    # official client), so it is left out of this service's own OpenAPI document.
    app.include_router(openai_api.router, include_in_schema=False)
    app.include_router(resource_metadata.router)
    app.router.routes.append(Route(MCP_PATH, endpoint=McpAuthentication(mcp, runtime_of_scope)))

    # add_middleware wraps: the last added runs first (outermost).
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_upload_bytes + BODY_LIMIT_MARGIN_BYTES,
                       path_limits={"/documents/batch": batch_body_bytes(settings)})
    setup_metrics(app, token=settings.metrics_token)
    app.add_middleware(RequestContextMiddleware)
    if settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_credentials=True,
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "Accept", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    return app


def run(settings: Settings | None = None) -> None:
    """Serve with uvicorn on settings.host:settings.port (one process: embedded stores are
    single-writer; scale out with DATABASE_URL + QDRANT_URL and more replicas)."""
    import uvicorn

    settings = settings or get_settings()
    configure_logging(settings.log_level)
    uvicorn.run(create_app(settings), **uvicorn_options(settings))
