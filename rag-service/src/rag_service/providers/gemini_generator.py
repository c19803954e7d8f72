"""Answers from Gemini (`gemini-2.5-flash` by default), streamed, with checked citations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from google.genai import types

from rag_service.config import Settings
from rag_service.providers.base import NOT_FOUND_ANSWER, Source, Turn
from rag_service.errors import ProviderUnavailable
from rag_service.providers.citations import filter_citations
from rag_service.providers.not_found import recognise_not_found
from rag_service.providers.gemini_common import build_gemini_client, gemini_failures
from rag_service.providers.prompt import SYSTEM_INSTRUCTION, build_user_message
from rag_service.core.retry import RetryPolicy, stream_with_retries

PROVIDER = "Gemini"
FAILURES = gemini_failures(PROVIDER)
# Low temperature: the answer should restate the sources, not be creative.
TEMPERATURE = 0.2


def build_contents(query: str, sources: list[Source], history: list[Turn]) -> list[types.Content]:
    """Earlier turns (Gemini calls the assistant 'model'), then the sources and the question."""
    contents = [
        types.Content(role="model" if turn.role == "assistant" else "user", parts=[types.Part(text=turn.content)])
        for turn in history
        if turn.content.strip()
    ]
    contents.append(types.Content(role="user", parts=[types.Part(text=build_user_message(query, sources))]))
    return contents


def chunk_text(chunk: types.GenerateContentResponse) -> str:
    """The answer text of one streamed chunk (thought summaries and non-text parts skipped)."""
    if not chunk.candidates:
        return ""
    content = chunk.candidates[0].content
    if content is None or not content.parts:
        return ""
    return "".join(part.text for part in content.parts if part.text and not part.thought)


class GeminiGenerator:
    def __init__(self, settings: Settings, *, retry_policy: RetryPolicy | None = None) -> None:
        if not settings.gemini_api_key:
            raise ValueError("GeminiGenerator needs GEMINI_API_KEY")
        self.model = settings.gemini_chat_model
        self.name = f"gemini:{self.model}"
        self._client = build_gemini_client(settings.gemini_api_key, settings.llm_timeout_seconds)
        self._retry_policy = retry_policy or RetryPolicy(max_retries=settings.llm_max_retries)
        self._config = types.GenerateContentConfig(system_instruction=SYSTEM_INSTRUCTION, temperature=TEMPERATURE)

    async def stream(self, query: str, sources: list[Source], history: list[Turn]) -> AsyncIterator[str]:
        if not sources:  # nothing retrieved: nothing to answer from, and no model call
            yield NOT_FOUND_ANSWER
            return
        contents = build_contents(query, sources, history)
        pieces = stream_with_retries(lambda: self._raw_pieces(contents), FAILURES, self._retry_policy)
        # Citations of sources that do not exist are dropped; a "the sources do not say"
        # reply becomes NOT_FOUND_ANSWER (answer_found: false, nothing cited).
        checked = filter_citations(pieces, max((s.number for s in sources), default=0))
        async with aclosing(recognise_not_found(checked)) as shown:
            async for piece in shown:
                yield piece

    async def _raw_pieces(self, contents: list[types.Content]) -> AsyncIterator[str]:
        stream = await self._client.aio.models.generate_content_stream(
            model=self.model, contents=contents, config=self._config
        )
        produced = False
        finish_reason = None
        async for chunk in stream:
            if chunk.candidates and chunk.candidates[0].finish_reason:
                finish_reason = chunk.candidates[0].finish_reason
            if text := chunk_text(chunk):
                produced = True
                yield text
            elif chunk.prompt_feedback and chunk.prompt_feedback.block_reason:
                raise ProviderUnavailable(PROVIDER, f"the question was blocked ({chunk.prompt_feedback.block_reason})")
        if not produced:
            raise ProviderUnavailable(PROVIDER, f"no answer was returned (finish reason: {finish_reason})")

    async def aclose(self) -> None:
        await self._client.aio.aclose()
