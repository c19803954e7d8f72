"""A model's "the documents do not say" reply, recognised and replaced by `NOT_FOUND_ANSWER`.

The prompt (prompt.py) asks the model to reply with exactly `NOT_FOUND_ANSWER` when the
sources do not answer. Models mostly do, sometimes in their own words ("I could not find
this in the provided documents."). A reply that *starts* like one of `NOT_FOUND_OPENINGS`
and cites no source is a not-found reply: the generator yields `NOT_FOUND_ANSWER` instead,
so that the chat service reports `answer_found: false` and cites nothing. A reply that
starts that way but then cites a source ("I could not find the default, but [2] says...")
is an answer and passes unchanged.

Streaming: pieces pass through as they come once the reply's opening rules a not-found
reply out (after a few characters); a reply that opens like a not-found one is held back
to its end (such replies are one sentence).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing

from rag_service.providers.base import NOT_FOUND_ANSWER
from rag_service.providers.citations import MARKER

# Lowercase, apostrophes straightened; matched against the reply's opening (leading
# whitespace, quotes and emphasis dropped).
NOT_FOUND_OPENINGS = (
    NOT_FOUND_ANSWER.lower(),
    "i couldn't find",
    "i could not find",
    "i can't find",
    "i cannot find",
    "i can not find",
    "i was unable to find",
    "i was not able to find",
    "i don't know",
    "i do not know",
    "not found",
    "the sources do not",
    "the sources don't",
    "the provided sources do not",
    "the provided sources don't",
    "the documents do not",
    "the documents don't",
    "the provided documents do not",
    "the provided documents don't",
    "your documents do not",
    "your documents don't",
    "there is no information",
    "no information",
)
_LEADING_NOISE = re.compile(r"^[\s\"'*_>`“‘]+")


def _opening(text: str) -> str:
    text = text.replace("\u2019", "'").lower()
    return " ".join(_LEADING_NOISE.sub("", text).split())


def opens_like_not_found(text: str) -> bool | None:
    """True when `text` opens like a not-found reply, False when it cannot, None when more
    text is needed to tell."""
    opening = _opening(text)
    if any(opening.startswith(prefix) for prefix in NOT_FOUND_OPENINGS):
        return True
    if any(prefix.startswith(opening) for prefix in NOT_FOUND_OPENINGS):
        return None
    return False


def is_not_found_reply(text: str) -> bool:
    """A whole reply that says the sources do not answer, citing none of them."""
    return opens_like_not_found(text) is True and MARKER.search(text) is None


async def recognise_not_found(pieces: AsyncIterator[str]) -> AsyncIterator[str]:
    """`pieces` of a model's reply (citations already checked), with a not-found reply
    replaced by `NOT_FOUND_ANSWER`."""
    held = ""
    verdict: bool | None = None
    async with aclosing(pieces):  # type: ignore[type-var]
        async for piece in pieces:
            if verdict is False:
                yield piece
                continue
            held += piece
            if verdict is None:
                verdict = opens_like_not_found(held)
                if verdict is False:
                    yield held
                    held = ""
    if held:
        yield NOT_FOUND_ANSWER if is_not_found_reply(held) else held
