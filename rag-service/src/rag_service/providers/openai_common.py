"""What the OpenAI-compatible embedder and generator share: the error status, the server's
error message and the failure classification (gemini_common.py is the Gemini twin)."""

from __future__ import annotations

import json

import httpx

from rag_service.core.retry import Failure, ProviderFailures

# Statuses worth another attempt: timeouts, conflicts, rate limits and server-side failures.
TRANSIENT_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class UpstreamStatusError(Exception):
    """The server answered with an error status."""

    def __init__(self, status: int, detail: str, retry_after: float | None) -> None:
        super().__init__(f"server returned HTTP {status}{f': {detail}' if detail else ''}")
        self.status = status
        self.retry_after = retry_after


def error_detail(body: bytes) -> str:
    """The server's error message: OpenAI/vLLM `{"error": {"message"}}`, Ollama/TEI `{"error": "..."}`."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(error, dict):
        return str(error.get("message", ""))[:200]
    return str(error or "")[:200]


def describe_failure(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "the server timed out"
    if isinstance(exc, httpx.TransportError):
        return f"cannot reach the server ({type(exc).__name__})"
    return str(exc)


def openai_failures(provider: str, malformed: type[Exception]) -> ProviderFailures:
    """Retry classification for an OpenAI-compatible server: error statuses by TRANSIENT_STATUS,
    network failures transient, an answer of the wrong shape (`malformed`) fatal."""

    def classify_failure(exc: BaseException) -> Failure | None:
        if isinstance(exc, UpstreamStatusError):
            return "transient" if exc.status in TRANSIENT_STATUS else "fatal"
        if isinstance(exc, (httpx.TimeoutException, httpx.TransportError)):
            return "transient"
        if isinstance(exc, (malformed, httpx.HTTPError)):
            return "fatal"
        return None

    return ProviderFailures(provider, classify_failure, describe_failure,
                            retry_after=lambda exc: getattr(exc, "retry_after", None))
