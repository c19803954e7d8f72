"""The FastAPI application: `create_app(settings, runtime)` and `run()` (uvicorn).

Every error leaves as JSON `{"error": {"code", "message", "request_id"}}`: AppErrors with
their own status, validation errors as 422, unknown routes as 404, database outages as 503
and anything unexpected as a 500 without a stack trace (the trace goes to the log).
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from rag_service.agents import openai_api, resource_metadata
from rag_service.agents.mcp_auth import McpAuthentication
from rag_service.agents.mcp_server import McpEndpoint
from rag_service.agents.resource_metadata import MCP_PATH
from rag_service.agents.openai_api import is_openai_path, openai_error_body
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
from rag_service.errors import AppError, describe_validation_errors, error_responses
from rag_service import health
from rag_service.history import api as history_api
from rag_service.http_hardening import SECURITY_HEADERS, SecurityHeadersMiddleware, uvicorn_options
from rag_service.observability import (
    REQUEST_ID_HEADER,
    BodySizeLimitMiddleware,
    RequestContextMiddleware,
    configure_logging,
    setup_metrics,
)
from rag_service.runtime import Runtime, build_runtime
from rag_service.search import api as search_api
from rag_service.storage.db import describe_database_error, is_database_unavailable, run_migrations

log = logging.getLogger(__name__)

# Shutdown: how long cancelled ingestions get to release their claims (a few SQL statements).
INGESTION_RELEASE_WAIT_S = 3.0
# Multipart framing and form fields on top of the largest allowed upload.
BODY_LIMIT_MARGIN_BYTES = 64 * 1024

_HTTP_ERROR_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 413: "payload_too_large",
    415: "unsupported_media_type", 429: "rate_limited",
}


def error_response(request: Request, status: int, code: str, message: str, *,
                   headers: dict[str, str] | None = None, details: Any = None) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details is not None:
        error["details"] = details
    body: dict[str, Any] = {"error": error}
    if is_openai_path(request.url.path):
        # The OpenAI-compatible API answers in OpenAI's error shape (its clients parse it);
        # its bad input is a 400, as OpenAI's (our other routes say 422).
        status = 400 if status == 422 else status
        param = details[0].get("field") if isinstance(details, list) and details else None
        body = openai_error_body(status, code, message, param)
    # The 500 handler runs outside every middleware: set the security headers here too.
    response_headers = {**SECURITY_HEADERS, **(headers or {})}
    if request_id:
        # The 500 handler runs outside the request-id middleware, so set it here too.
        response_headers[REQUEST_ID_HEADER] = request_id
    return JSONResponse(body, status_code=status, headers=response_headers)


def install_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(request, exc.status_code, exc.code, exc.message,
                              headers=exc.headers, details=exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = describe_validation_errors(exc.errors())
        return error_response(request, 422, "validation_error", message, details=details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_ERROR_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return error_response(request, exc.status_code, code, message, headers=exc.headers)

    @app.exception_handler(UnicodeEncodeError)
    async def unencodable_text(request: Request, exc: UnicodeEncodeError) -> JSONResponse:
        # JSON may carry unpaired surrogates ("\ud800"): valid for json.loads, but no
        # UTF-8 encoder (database driver, tokenizer, JSON column) accepts them. Bad input.
        return error_response(request, 422, "invalid_text",
                              "text contains unpaired UTF-16 surrogates (not valid Unicode)")

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        return await _database_or_internal(request, exc)

    try:
        import psycopg
    except ImportError:  # pragma: no cover
        pass
    else:
        @app.exception_handler(psycopg.OperationalError)
        async def psycopg_error(request: Request, exc: Exception) -> JSONResponse:
            return await _database_or_internal(request, exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        if is_database_unavailable(exc) or isinstance(exc, DBAPIError):
            return await _database_or_internal(request, exc)
        _log_failure("unhandled error", request, exc, type(exc).__name__)
        return error_response(request, 500, "internal_error", "internal server error")


async def _database_or_internal(request: Request, exc: Exception) -> JSONResponse:
    if is_database_unavailable(exc):
        log.warning("database unavailable: %s", describe_database_error(exc))
        return error_response(request, 503, "service_unavailable", "database unavailable")
    _log_failure("database error", request, exc, describe_database_error(exc))
    return error_response(request, 500, "internal_error", "internal server error")


def _log_failure(what: str, request: Request, exc: BaseException, description: str) -> None:
    """Log where it failed (route, exception type, stack) but never the exception's message:
    messages of driver, database and parsing errors quote the values users sent."""
    route = getattr(request.scope.get("route"), "path", None) or "(no route)"
    stack = "".join(traceback.format_tb(exc.__traceback__))
    log.error("%s on %s %s: %s\n%s", what, request.method, route, description, stack)


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
