"""Errors raised by the client: one exception type per kind of failure, each carrying the
service's error `code` (e.g. "insufficient_scope", "not_found", "rate_limited")."""

from __future__ import annotations

from typing import Any

import httpx


class RagError(Exception):
    """A request the service refused or could not serve. `status` is the HTTP status (0 when
    the service could not be reached); `code` and `message` come from its `{error: {...}}` body."""

    def __init__(self, status: int, code: str, message: str, *, request_id: str | None = None,
                 details: Any = None, retry_after: float | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.details = details
        self.retry_after = retry_after


class AuthenticationError(RagError):
    """401: bad credentials, or an API key that is invalid, revoked or expired."""


class PermissionDenied(RagError):
    """403: e.g. `insufficient_scope` for a read-only API key on a write route."""


class NotFound(RagError):
    """404: missing, or owned by someone else (the service never says which)."""


class RateLimited(RagError):
    """429 after the client's own retries; `retry_after` is the server's advice in seconds."""


class InvalidRequest(RagError):
    """400, 409, 413, 415, 422: the request was refused as it stands; retrying will not help."""


class ServiceUnavailable(RagError):
    """5xx or no connection."""


_BY_STATUS: dict[int, type[RagError]] = {401: AuthenticationError, 403: PermissionDenied, 404: NotFound,
                                          429: RateLimited, 400: InvalidRequest, 409: InvalidRequest,
                                          413: InvalidRequest, 415: InvalidRequest, 422: InvalidRequest}


def retry_after_seconds(response: httpx.Response) -> float | None:
    raw = response.headers.get("retry-after")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def error_for(status: int, code: str, message: str, **extra: Any) -> RagError:
    """The error class for `status` (NotFound for 404, ServiceUnavailable for a 5xx...)."""
    kind = _BY_STATUS.get(status, ServiceUnavailable if status >= 500 else RagError)
    return kind(status, code, message, **extra)


def error_from_response(response: httpx.Response) -> RagError:
    code, message, request_id, details = f"http_{response.status_code}", response.reason_phrase, None, None
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = str(error.get("code") or code)
        message = str(error.get("message") or message)
        request_id = error.get("request_id")
        details = error.get("details")
    kind = _BY_STATUS.get(response.status_code, ServiceUnavailable if response.status_code >= 500 else RagError)
    return kind(response.status_code, code, message, request_id=request_id, details=details,
                retry_after=retry_after_seconds(response))


def unreachable(exc: httpx.TransportError, auth_url: str) -> ServiceUnavailable:
    """A request that got no answer (connection refused, timeout...), naming the service."""
    service = "auth" if auth_url and str(exc.request.url).startswith(auth_url) else "rag"
    return ServiceUnavailable(0, "connection_error", f"cannot reach the {service} service: {exc}")
