"""Helpers shared by the chat tests: a small corpus, real ingestion, SSE parsing."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from rag_service.chat.service import ChatService
from rag_service.chat.turns import ChatTurns
from rag_service.documents.service import DocumentService
from rag_service.providers.base import Embedder, Generator, Source, Turn
from rag_service.search.service import SearchService

BREAD = (
    "Bread rises because yeast ferments the sugars in the dough and releases carbon dioxide gas. "
    "The gluten network traps the gas in small bubbles, so the loaf expands in the oven. "
    "A longer, cooler proof gives the yeast more time and the bread a deeper flavour."
)
VOLCANO = (
    "Volcanoes form where magma from the mantle reaches the surface. "
    "Stratovolcanoes are steep cones built from layers of lava and ash. "
    "Shield volcanoes erupt runny basaltic lava that spreads into broad, gentle slopes."
)
ZFROB = (
    "The zfrob utility compresses archive files into the frob format and verifies their checksums. "
    "It reads each archive, writes a .frob file beside it and reports the compression ratio. "
    "Command-line flags: -k keeps the original file, -v prints each archive name, "
    "and -z selects the strongest compression level."
)
QUAXLE = (
    "The quaxle daemon schedules nightly backups of home directories. "
    "About its flags: the flags of quaxle are --dry-run, which only prints the plan, and --force, "
    "which ignores the lock file. Other flags are listed in the configuration guide."
)
# Bob's own text about bread: Alice must never be shown it.
BOB_BREAD = (
    "Bob's notebook: bread rises because of yeast, carbon dioxide and the gluten network. "
    "Bob's secret sourdough starter is fed every morning with rye flour."
)

CITATION = re.compile(r"\[(\d+)\]")


def cited(text: str) -> set[int]:
    """Citation numbers in an answer (parsed independently of the providers' code)."""
    return {int(n) for n in CITATION.findall(text)}


async def ingest(runtime: Any, user_id: str, title: str, content: str) -> str:
    async with runtime.sessionmaker() as session:
        documents = DocumentService(session, runtime.vector_store, runtime.sparse_encoder,
                                    runtime.embedder, runtime.settings)
        document, _ = await documents.save(user_id, title, content)
        assert document.status == "ready", document.error
        return document.id


def chat_service(runtime: Any, *, generator: Generator | None = None, embedder: Embedder | None = None,
                 max_messages: int | None = None) -> ChatService:
    settings = runtime.settings
    turn_kwargs = {} if max_messages is None else {"max_messages_per_conversation": max_messages}
    return ChatService(
        search=SearchService(runtime.vector_store, runtime.sparse_encoder, embedder or runtime.embedder, settings),
        generator=generator or runtime.generator,
        turns=ChatTurns(runtime.sessionmaker, max_history_turns=settings.max_history_turns,
                        max_history_characters=settings.quota_max_history_characters, **turn_kwargs),
        max_query_chars=settings.max_query_chars,
        max_history_turns=settings.max_history_turns,
        max_answer_chars=settings.max_answer_chars,
    )


class PacedGenerator:
    """A real generator whose pieces arrive `delay` seconds apart, the way a remote model's
    do; lets a test disconnect while an answer is still being written."""

    def __init__(self, inner: Generator, delay: float) -> None:
        self.inner = inner
        self.delay = delay
        self.name = f"paced-{inner.name}"

    async def stream(self, query: str, sources: list[Source], history: list[Turn]) -> AsyncIterator[str]:
        async for piece in self.inner.stream(query, sources, history):
            await asyncio.sleep(self.delay)
            yield piece
        await asyncio.sleep(self.delay)  # like a model's final, empty chunk


def parse_sse(raw: str) -> list[tuple[str, Any]]:
    """(event name, decoded JSON data) for every event in a raw SSE body; comments skipped."""
    events = []
    for block in re.split(r"\r\n\r\n|\n\n|\r\r", raw):
        name, data = "message", []
        for line in re.split(r"\r\n|\n|\r", block):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events
