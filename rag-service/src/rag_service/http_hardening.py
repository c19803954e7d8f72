"""HTTP hardening shared by every way the service is served (`rag serve`, `python -m
rag_service`, main.run): response headers and the uvicorn options.

- Every response carries `Cache-Control: no-store` (answers, documents and history are
  private: no shared or browser cache may keep them), `X-Content-Type-Options: nosniff`
  and `Referrer-Policy: no-referrer`.
- No `server` header (uvicorn's `server: uvicorn` names the software to scanners).
- Request heads are bounded: uvicorn's httptools parser buffers headers without a limit
  (a 64 MB header was accepted), so the service runs the h11 parser with
  `h11_max_incomplete_event_size` = MAX_REQUEST_HEADER_BYTES: a bigger request line +
  headers gets a 400 and the connection is closed.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag_service.config import Settings

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value  # replaces e.g. SSE's "no-cache": no-store is stricter
            await send(message)

        await self.app(scope, receive, send_with_headers)


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `uvicorn.run` / `uvicorn.Config` besides the app."""
    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # the service writes its own access log (observability.py)
        "proxy_headers": True,
        "server_header": False,
        "http": "h11",
        "h11_max_incomplete_event_size": settings.max_request_header_bytes,
        # SIGTERM: requests still running after this are cancelled (an interrupted ingestion
        # is left for repair, see indexing.py), so the process exits within seconds.
        "timeout_graceful_shutdown": settings.shutdown_grace_seconds,
    }
