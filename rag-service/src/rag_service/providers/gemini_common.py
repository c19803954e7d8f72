"""What the Gemini embedder and generator share: the client and the failure classification."""

from __future__ import annotations

import httpx
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from rag_service.core.retry import Failure, ProviderFailures, parse_retry_after

# Statuses worth another attempt: rate limits, timeouts and server-side failures.
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def build_gemini_client(api_key: str, timeout_seconds: float) -> genai.Client:
    """A google-genai client that never retries on its own and talks HTTP through httpx.

    - `retry_options` is left unset, which makes the SDK try each request once: our own
      `core/retry.py` owns retries, so their number and backoff are bounded and testable.
    - google-genai 3.x prefers the `httpx2` fork when it is installed; passing an httpx
      object in `async_client_args` makes it pick plain httpx (its backend detection looks
      at those values), so respx can intercept requests in tests and httpx exceptions are
      what we classify.
    """
    timeout = httpx.Timeout(timeout_seconds, connect=min(timeout_seconds, 10.0))
    http_options = types.HttpOptions(
        timeout=int(timeout_seconds * 1000),
        async_client_args={"timeout": timeout},
        retry_options=None,
    )
    return genai.Client(api_key=api_key, http_options=http_options)


def classify_gemini_failure(exc: BaseException) -> Failure | None:
    if isinstance(exc, genai_errors.APIError):
        return "transient" if exc.code in TRANSIENT_STATUS else "fatal"
    if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
        return "transient"
    if isinstance(exc, (httpx.HTTPError, ValueError)):
        # ValueError: the SDK could not parse what the server sent back.
        return "fatal"
    return None


def describe_gemini_failure(exc: BaseException) -> str:
    if isinstance(exc, genai_errors.APIError):
        detail = f": {exc.message}" if exc.message else ""
        return f"Gemini API returned HTTP {exc.code}{detail}"
    if isinstance(exc, httpx.TimeoutException):
        return "Gemini API timed out"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the Gemini API ({type(exc).__name__})"
    return f"unexpected Gemini API response ({type(exc).__name__}: {exc})"


def gemini_retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    return parse_retry_after(headers.get("retry-after"))


def gemini_failures(provider: str) -> ProviderFailures:
    """How the retries read the Gemini SDK's exceptions, named `provider` in messages."""
    return ProviderFailures(provider, classify_gemini_failure, describe_gemini_failure, gemini_retry_after)
