"""Answers from any OpenAI-compatible `/chat/completions` server (Ollama, vLLM, OpenAI...).

Talks plain httpx with `stream: true` and reads the Server-Sent Events with httpx-sse: no
SDK, so any server that speaks the protocol works, and respx can stand in for it in tests.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

import httpx
from httpx_sse import SSEError, aconnect_sse

from rag_service.config import Settings
from rag_service.providers.base import NOT_FOUND_ANSWER, Source, Turn
from rag_service.providers.citations import filter_citations
from rag_service.providers.not_found import recognise_not_found
from rag_service.providers.prompt import build_chat_messages
from rag_service.providers.openai_common import UpstreamStatusError, error_detail, openai_failures
from rag_service.core.retry import RetryPolicy, parse_retry_after, stream_with_retries

PROVIDER = "OpenAI-compatible LLM"
TEMPERATURE = 0.2


class MalformedStream(Exception):
    """The stream did not follow the chat-completions format (or carried an error)."""


FAILURES = openai_failures(PROVIDER, MalformedStream)


class OpenAIGenerator:
    def __init__(self, settings: Settings, *, retry_policy: RetryPolicy | None = None) -> None:
        self.model = settings.openai_model
        self.name = f"openai:{self.model}"
        self.url = settings.openai_base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "text/event-stream"}
        if settings.openai_api_key:
            headers["Authorization"] = f"Bearer {settings.openai_api_key}"
        # The read timeout bounds the wait for each streamed piece, not the whole answer.
        timeout = httpx.Timeout(settings.llm_timeout_seconds, connect=min(settings.llm_timeout_seconds, 10.0))
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout)
        self._retry_policy = retry_policy or RetryPolicy(max_retries=settings.llm_max_retries)

    async def stream(self, query: str, sources: list[Source], history: list[Turn]) -> AsyncIterator[str]:
        if not sources:  # nothing retrieved: nothing to answer from, and no model call
            yield NOT_FOUND_ANSWER
            return
        payload = {
            "model": self.model,
            "messages": build_chat_messages(query, sources, history),
            "temperature": TEMPERATURE,
            "stream": True,
        }
        pieces = stream_with_retries(lambda: self._raw_pieces(payload), FAILURES, self._retry_policy)
        # Citations of sources that do not exist are dropped; a "the sources do not say"
        # reply becomes NOT_FOUND_ANSWER (answer_found: false, nothing cited).
        checked = filter_citations(pieces, max((s.number for s in sources), default=0))
        async with aclosing(recognise_not_found(checked)) as shown:
            async for piece in shown:
                yield piece

    async def _raw_pieces(self, payload: dict) -> AsyncIterator[str]:
        async with aconnect_sse(self._client, "POST", self.url, json=payload) as source:
            response = source.response
            if response.status_code != 200:
                body = await response.aread()
                raise UpstreamStatusError(
                    response.status_code, error_detail(body), parse_retry_after(response.headers.get("retry-after"))
                )
            produced = False
            try:
                async for event in source.aiter_sse():  # comments (": keep-alive") are skipped
                    data = event.data.strip()
                    if not data:
                        continue
                    if data == "[DONE]":
                        break
                    if text := self._delta_text(data):
                        produced = True
                        yield text
            except SSEError as exc:  # not an event stream (httpx-sse makes it a TransportError)
                raise MalformedStream(str(exc)) from exc
            if not produced:
                raise MalformedStream("the server returned an empty answer")

    @staticmethod
    def _delta_text(data: str) -> str:
        try:
            event = json.loads(data)
        except ValueError as exc:
            raise MalformedStream(f"unreadable stream event: {data[:100]!r}") from exc
        if not isinstance(event, dict):
            raise MalformedStream("unexpected stream event")
        if "error" in event:
            error = event["error"]
            message = error.get("message") if isinstance(error, dict) else error
            raise MalformedStream(f"the server reported an error: {str(message)[:200]}")
        choices = event.get("choices") or []
        if not choices:
            return ""  # e.g. a final usage-only event
        delta = choices[0].get("delta") or {}
        content = delta.get("content")
        return content if isinstance(content, str) else ""

    async def aclose(self) -> None:
        await self._client.aclose()

