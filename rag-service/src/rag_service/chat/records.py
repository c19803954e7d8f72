"""The records of a chat turn that travel as they are: each cited source is stored with the
answer (history returns it unchanged) and sent to the client, and the timing ends the
stream. The service builds them; chat/schemas.py uses them in the wire shapes, so the
stored, streamed and JSON forms of a source are one definition.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CitedSource:
    """A retrieved chunk as the answer cites it: `[number]`, numbered from 1 in rank order."""

    number: int
    document_id: str
    title: str
    chunk_index: int
    score: float
    snippet: str
    # Whether the answer cites it (`[number]` in the text): known once the answer is done,
    # so None in the `sources` event, a bool in the JSON answer and in stored history.
    cited: bool | None = None


@dataclass(frozen=True)
class Timing:
    """Milliseconds from the request reaching the chat service."""

    # Question saved and sources retrieved (query embedding + hybrid search).
    retrieval_ms: float
    # None when no text was produced.
    first_delta_ms: float | None
    total_ms: float
