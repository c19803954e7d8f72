"""Provider interfaces: one `Embedder` and one `Generator`, with implementations beside them.

Providers raise `ProviderUnavailable` (errors.py, a 503) when the backing model or API cannot serve
the request after bounded retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, Protocol

EmbedTask = Literal["document", "query"]

# The answer of every generator when the sources do not answer the question: exactly this
# text, alone, citing nothing (the chat service reports it as `answer_found: false`).
NOT_FOUND_ANSWER = "I couldn't find anything about that in your documents."

# The account whose documents are being embedded: a local encoder shares its lanes fairly
# between accounts (encoder_worker.py). Set by ingestion around one document's run.
embedding_account: ContextVar[str] = ContextVar("embedding_account", default="")


class Embedder(Protocol):
    """Turns texts into dense vectors of a fixed dimension."""

    # Used in the collection name so switching models never mixes vector spaces.
    model_name: str
    dimension: int

    async def embed(self, texts: list[str], task: EmbedTask = "document") -> list[list[float]]:
        """One unit-length vector per text, in order. Batches internally."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens the model would see for `text` (used to size chunks)."""
        ...


@dataclass(frozen=True)
class Source:
    """A numbered passage given to a generator; `[n]` in an answer cites `number`."""

    number: int
    title: str
    text: str


@dataclass(frozen=True)
class Turn:
    """An earlier message of the conversation."""

    role: Literal["user", "assistant"]
    content: str


class Generator(Protocol):
    """Writes an answer to `query` from numbered `sources`, citing them as `[n]`.

    Only numbers of `sources` may be cited: the chat service shows and saves the stream
    as it comes (model generators enforce it with `citations.filter_citations`). When the
    sources do not answer the question, the whole answer is `NOT_FOUND_ANSWER`, alone.

    `name` says which generator answered (`extractive`, `gemini:<model>`, `openai:<model>`)."""

    name: str

    def stream(self, query: str, sources: list[Source], history: list[Turn]) -> AsyncIterator[str]:
        """Yield the answer in text pieces."""
        ...
