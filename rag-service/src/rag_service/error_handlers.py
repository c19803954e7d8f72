"""How every error leaves the app: JSON `{"error": {"code", "message", "request_id"}}`.

AppErrors with their own status, validation errors as 422, unknown routes as 404, database
outages as 503 and anything unexpected as a 500 without a stack trace (the trace goes to the
log). The OpenAI-compatible API (/v1) answers in OpenAI's error shape instead.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag_service.agents.openai_api import is_openai_path, openai_error_body
from rag_service.errors import AppError, describe_validation_errors
from rag_service.http_hardening import SECURITY_HEADERS
from rag_service.observability import REQUEST_ID_HEADER
from rag_service.storage.db import describe_database_error, is_database_unavailable

# The app's logger: these lines are the app's failures, whichever module renders them.
log = logging.getLogger("rag_service.main")

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
