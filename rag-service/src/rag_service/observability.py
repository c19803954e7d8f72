"""Request ids, structured logs, request-body limit and Prometheus metrics.

- `RequestContextMiddleware`: accepts a sane incoming `X-Request-ID` (else a new uuid4),
  echoes it on the response, makes it available as `request.state.request_id` and to every
  log record, and writes one JSON access-log line per request (request id, user id, route,
  status, latency).
- `BodySizeLimitMiddleware`: 413 before reading when Content-Length is too big, and counts
  streamed (chunked) bodies too.
- `/metrics`: prometheus-fastapi-instrumentator request metrics (one registry per app, so
  several apps in one process - tests - don't clash) plus the process-wide counters of
  `metrics.py` (default registry), only with `Authorization: Bearer $METRICS_TOKEN` (no token
  configured -> no route).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar
from datetime import datetime, timezone

from fastapi import FastAPI, Request, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_fastapi_instrumentator import Instrumentator
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_service.errors import Unauthorized

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

access_log = logging.getLogger("rag_service.access")
_HANDLER_FLAG = "_rag_service_handler"


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line; the current request id is added to every record."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _InfoAndAbove(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.INFO


# Libraries that log payloads at DEBUG: sse-starlette logs every event it sends (answers,
# sources with titles and snippets). Their DEBUG records are dropped whatever the levels.
# (SQLAlchemy's result rows are dropped in storage/db.py.)
_PAYLOAD_LOGGERS = ("sse_starlette.sse",)


def configure_logging(level: str = "INFO") -> None:
    """JSON logs on stderr for the service's loggers (idempotent).

    If logging is already configured (handlers on the root logger: an operator's logging
    config, or pytest's capture), records just propagate there instead."""
    for name in _PAYLOAD_LOGGERS:
        payload_logger = logging.getLogger(name)
        if not any(isinstance(f, _InfoAndAbove) for f in payload_logger.filters):
            payload_logger.addFilter(_InfoAndAbove())
    logger = logging.getLogger("rag_service")
    logger.setLevel(level.upper())
    if logging.getLogger().handlers:
        return
    if not any(getattr(h, _HANDLER_FLAG, False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonLogFormatter())
        setattr(handler, _HANDLER_FLAG, True)
        logger.addHandler(handler)
        logger.propagate = False


def request_id_from(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        request_id = incoming if incoming and _SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        status = 500  # if the app raises before responding, the server error handler sends a 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            route = scope.get("route")
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "fields": {
                        "method": scope.get("method"),
                        "route": getattr(route, "path", None),
                        "path": scope.get("path"),
                        "status": status,
                        "latency_ms": round((time.perf_counter() - started) * 1000, 2),
                        "user_id": state.get("user_id"),
                    },
                },
            )
            request_id_var.reset(token)


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


class BodySizeLimitMiddleware:
    """Bodies over `max_body_bytes` (or over the limit of their path in `path_limits`) are
    a 413 before they are read, or as soon as the count passes the limit."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, path_limits: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.path_limits = path_limits or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope.get("path", ""), self.max_body_bytes)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._reject(scope, send, limit)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI re-raises HTTPExceptions from body reading, so this becomes
                    # the same JSON 413 as below via the app's exception handlers.
                    raise _BodyTooLarge(limit)
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Send, limit: int) -> None:
        body = json.dumps({"error": {
            "code": "payload_too_large",
            "message": f"request body larger than {limit} bytes",
            "request_id": request_id_from(scope),
        }}).encode()
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def setup_metrics(app: FastAPI, token: str | None) -> CollectorRegistry:
    """Instrument `app`; with a `token`, expose `/metrics` (its request metrics + the
    process-wide counters) to requests bearing `Authorization: Bearer <token>`.

    The API port is public, and metrics name routes, volumes and error rates: without a
    token there is no /metrics route at all (404)."""
    registry = CollectorRegistry()
    Instrumentator(
        should_group_status_codes=False,
        excluded_handlers=["/metrics"],
        registry=registry,
    ).instrument(app)
    if not token:
        return registry
    expected = f"Bearer {token}".encode()

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        presented = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(presented, expected):
            raise Unauthorized("metrics need the metrics bearer token")
        return Response(generate_latest(registry) + generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return registry
