"""`[n]` citation markers: keep the ones that point at a real source, drop the rest.

Models sometimes cite sources that were never given ("[7]" with 5 sources). Such markers
are removed (with the whitespace before them); lists like "[2, 9]" keep their valid
numbers ("[2]"). `CitationFilter` does the same over a stream of pieces, holding back a
marker split across pieces, and gives exactly what `clean_citations` gives on the
concatenated text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import aclosing

# "[3]", "[1, 2]", "[1,2 ,3]"; whitespace before the marker goes with it when it is dropped.
MARKER = re.compile(r"(?P<space>\s*)\[(?P<numbers>\d{1,4}(?:\s*,\s*\d{1,4})*)\]")
# The end of a piece that may still turn into a marker (or precede one) with more text.
PENDING_TAIL = re.compile(r"\s*\[[\d,\s]{0,40}$|\s+$")


def _keep_valid(match: re.Match[str], max_source: int) -> str:
    numbers = [int(n) for n in re.findall(r"\d+", match.group("numbers"))]
    valid = [n for n in numbers if 1 <= n <= max_source]
    if not valid:
        return ""
    if len(valid) == len(numbers):
        return match.group(0)
    return f"{match.group('space')}[{', '.join(str(n) for n in valid)}]"


def clean_citations(text: str, max_source: int) -> str:
    """`text` without markers that cite numbers outside 1..max_source."""
    return MARKER.sub(lambda m: _keep_valid(m, max_source), text)


def cited_numbers(text: str) -> list[int]:
    """Source numbers cited in `text`, in order of first citation, without repeats."""
    seen: dict[int, None] = {}
    for match in MARKER.finditer(text):
        for n in re.findall(r"\d+", match.group("numbers")):
            seen.setdefault(int(n), None)
    return list(seen)


class CitationFilter:
    """Streaming `clean_citations`: `feed(piece)` returns what is safe to show now,
    `flush()` returns the rest at the end of the stream.

    Usage: `out = [f.feed(p) for p in pieces] + [f.flush()]`; `"".join(out)` equals
    `clean_citations("".join(pieces), max_source)`. Pieces may come back empty.
    """

    def __init__(self, max_source: int) -> None:
        self.max_source = max_source
        self._pending = ""

    def feed(self, piece: str) -> str:
        text = self._pending + piece
        tail = PENDING_TAIL.search(text)
        cut = tail.start() if tail else len(text)
        self._pending = text[cut:]
        return clean_citations(text[:cut], self.max_source)

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return clean_citations(text, self.max_source)


async def filter_citations(pieces: AsyncIterator[str], max_source: int) -> AsyncIterator[str]:
    """`pieces` through a `CitationFilter` (empty results skipped). The model generators
    apply it to what the model streams; it is the only place answers are filtered."""
    citation_filter = CitationFilter(max_source)
    async with aclosing(pieces):  # type: ignore[type-var]
        async for piece in pieces:
            if shown := citation_filter.feed(piece):
                yield shown
    if rest := citation_filter.flush():
        yield rest
