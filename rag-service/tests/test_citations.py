"""Citation markers: invalid ones removed, in one go or across streamed pieces."""

from __future__ import annotations

import random

import pytest

from rag_service.providers.citations import CitationFilter, cited_numbers, clean_citations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris is the capital [1].", "Paris is the capital [1]."),
        ("Paris is the capital [7].", "Paris is the capital."),
        ("Bad [0] and good [2].", "Bad and good [2]."),
        ("Both [1, 2] and mixed [2, 9] and none [8, 9].", "Both [1, 2] and mixed [2] and none."),
        ("Adjacent [1][4][3].", "Adjacent [1][3]."),
        ("Not citations: [a], [], [1-2] and list[0] stay.", "Not citations: [a], [], [1-2] and list stay."),
        ("No markers at all.", "No markers at all."),
    ],
)
def test_clean_citations(text, expected):
    assert clean_citations(text, max_source=3) == expected


def test_no_sources_removes_every_marker():
    assert clean_citations("Claim [1]. Other [2, 3].", max_source=0) == "Claim. Other."


def test_cited_numbers_in_first_citation_order_without_repeats():
    assert cited_numbers("A [2]. B [1, 2]. C [3][2]. D [x].") == [2, 1, 3]
    assert cited_numbers("nothing") == []


def stream_clean(pieces: list[str], max_source: int) -> tuple[list[str], str]:
    citation_filter = CitationFilter(max_source)
    out = [citation_filter.feed(p) for p in pieces] + [citation_filter.flush()]
    return out, "".join(out)


def test_filter_holds_a_marker_split_across_pieces():
    out, text = stream_clean(["Revenue grew ", "[", "1", "2]", " and costs fell [", "2].", " End"], max_source=3)
    assert text == "Revenue grew and costs fell [2]. End"
    assert "[" not in "".join(out[:4])  # the unfinished "[12" was never shown


def test_filter_releases_brackets_that_are_not_markers():
    _, text = stream_clean(["see [appendix] ", "and [", "note]"], max_source=3)
    assert text == "see [appendix] and [note]"


@pytest.mark.parametrize("seed", range(30))
def test_filter_equals_clean_citations_on_any_split(seed):
    rng = random.Random(seed)
    text = "Claims [1] and [4], lists [1, 5] [2,3]  then [9][2]. Brackets [x] [ 12 ] end [3]"
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 15)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    _, streamed = stream_clean(pieces, max_source=3)
    assert streamed == clean_citations(text, max_source=3)
