"""The service's error model. Business code raises these (it never imports FastAPI);
`main.py` renders every one as `{"error": {"code", "message", "request_id"}}`.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None,
                 details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code
        self.headers = headers or {}
        self.details = details

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled whole (code included): extraction errors cross the sandbox's process boundary.
        return (_restore_error, (type(self), self.message, self.__dict__.copy()))


def _restore_error(cls: type[AppError], message: str, state: dict[str, Any]) -> AppError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"

    def __init__(self, message: str = "missing or invalid access token", **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    """Also used for other users' resources: never reveal that they exist."""

    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"


class Unprocessable(AppError):
    status_code = 422
    code = "unprocessable"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


class ServiceUnavailable(AppError):
    """A dependency (database, Qdrant, JWKS, embedding or answer provider) failed."""

    status_code = 503
    code = "service_unavailable"


class ProviderUnavailable(ServiceUnavailable):
    """A remote dependency failed after bounded retries (core/retry.py): the embedding or
    answer provider (timeouts, 5xx, 429 ...), a Qdrant server, the account-events feed."""

    code = "provider_unavailable"

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider} is unavailable: {message}")
        self.provider = provider


MAX_ERROR_MESSAGE_CHARS = 300


def describe_validation_errors(errors: Any) -> tuple[str, list[dict[str, str]]]:
    """Pydantic's errors as (summary, [{field, message, type}]): names the fields and
    limits, never echoes the (possibly huge) input back."""
    details = []
    for error in errors:
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "body") or "body"
        message = str(error.get("msg", "invalid value"))[:MAX_ERROR_MESSAGE_CHARS]
        details.append({"field": location, "message": message, "type": str(error.get("type", ""))})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    if len(details) > 5:
        summary += f"; and {len(details) - 5} more"
    return summary or "invalid request", details


# --- wire shape (documented in the OpenAPI schema) ---------------------------------------

from pydantic import BaseModel  # noqa: E402  (kept next to the shape it documents)

ERROR_DESCRIPTIONS = {
    400: "Bad request (e.g. a body that cannot be decoded)",
    401: "Missing, invalid or expired access token",
    403: "The token's scope does not allow this route (`insufficient_scope`: a read-only API key)",
    404: "Not found (another user's resources are never revealed: they are 'not found' too)",
    409: "Conflict: another request holds the resource (`conversation_busy`) or it is being deleted; retry shortly",
    413: "Request body, file or text larger than the configured limit, or `quota_exceeded`",
    415: "Unsupported file type",
    422: "Invalid request: the message names the field and the limit",
    429: "Rate limit exceeded: retry after the Retry-After header's seconds",
    503: "A dependency (database, vector store, JWKS, embedding or answer provider) is unavailable, "
         "or `busy` (too many documents being indexed: retry after the Retry-After header's seconds)",
}


class ErrorBody(BaseModel):
    code: str
    message: str
    request_id: str | None = None
    # Validation errors: [{field, message, type}]
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting error statuses with the JSON error shape."""
    return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}
