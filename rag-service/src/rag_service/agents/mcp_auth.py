"""Authentication in front of the MCP SDK at /mcp: the same bearer credentials as the REST API
(access JWT or API key, auth/bearer.py). Without a valid one: 401 in OAuth's bearer-token shape
(RFC 6750) with `WWW-Authenticate: Bearer resource_metadata="…"` (RFC 9728,
agents/resource_metadata.py); 429/503 in the same shape with their headers."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from rag_service.agents.mcp_server import RUNTIME_STATE_KEY, USER_STATE_KEY, McpEndpoint
from rag_service.agents.resource_metadata import www_authenticate
from rag_service.errors import AppError, ServiceUnavailable, Unauthorized
from rag_service.runtime import Runtime


class McpAuthentication:
    """ASGI app at /mcp: authenticates the bearer credential like every REST route, then hands
    the request to the SDK with the caller in the scope's state."""

    def __init__(self, endpoint: McpEndpoint, runtime_of_scope: Callable[[Scope], Runtime]) -> None:
        self._endpoint = endpoint
        self._runtime_of_scope = runtime_of_scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        runtime: Runtime = self._runtime_of_scope(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        client = scope.get("client")
        if scheme.lower() != "bearer" or not credential.strip():
            missing = Unauthorized("a bearer access token or API key is required")
            await _send_auth_error(scope, send, missing, runtime, credential_sent=False)
            return
        try:
            user = await runtime.authenticator.authenticate(credential, client_ip=client[0] if client else None)
        except AppError as exc:
            await _send_auth_error(scope, send, exc, runtime, credential_sent=True)
            return
        state = scope.setdefault("state", {})
        state[USER_STATE_KEY] = user
        state[RUNTIME_STATE_KEY] = runtime
        state["user_id"] = user.id  # the access log's field (observability.py)
        sessions = self._endpoint.sessions
        if sessions is None:  # outside the app's lifespan (starting or stopping)
            await _send_auth_error(scope, send, ServiceUnavailable("the MCP server is not running"), runtime,
                                   credential_sent=True)
            return
        await sessions.handle_request(scope, receive, send)


async def _send_auth_error(scope: Scope, send: Send, exc: AppError, runtime: Runtime, *,
                           credential_sent: bool) -> None:
    """401 in OAuth's bearer-token shape (RFC 6750) with the metadata pointer (RFC 9728);
    429/503 in the same shape with their headers."""
    error = "invalid_token" if exc.status_code == 401 else ("rate_limited" if exc.status_code == 429
                                                            else "temporarily_unavailable")
    body = json.dumps({"error": error, "error_description": exc.message, "code": exc.code}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    for name, value in exc.headers.items():
        if name.lower() != "www-authenticate":
            headers.append((name.lower().encode(), value.encode()))
    if exc.status_code == 401:
        challenge = www_authenticate(runtime.settings, scope, exc.message if credential_sent else None)
        headers.append((b"www-authenticate", challenge.encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
