"""ExtractiveGenerator: cited sentences copied from the sources, never invented."""

from __future__ import annotations

import re

from rag_service.providers.base import Source
from rag_service.providers.citations import cited_numbers
from rag_service.providers.extractive import NO_ANSWER, ExtractiveGenerator, split_sentences

SOURCES = [
    Source(1, "Handbook", "Welcome to Acme. Our office opens at 9am on weekdays.\nParking is free for employees."),
    Source(
        2,
        "Refunds",
        "Customers can request a refund within 30 days of purchase. Refunds are paid to the original "
        "payment method. Damaged items are refunded in full, e.g. broken screens.",
    ),
    Source(3, "Security", "Passwords must be rotated every 90 days. Two-factor authentication is mandatory."),
]


async def answer(query: str, sources: list[Source] = SOURCES) -> tuple[list[str], str]:
    pieces = [p async for p in ExtractiveGenerator().stream(query, sources, [])]
    return pieces, "".join(pieces)


def answer_sentences(text: str) -> list[tuple[str, int]]:
    """(sentence, cited number) pairs of an extractive answer."""
    return [(s, int(n)) for s, n in re.findall(r"\s*(.+?) \[(\d+)\]", text)]


async def test_answer_sentences_are_verbatim_and_cite_their_own_source():
    pieces, text = await answer("How many days do customers have to request a refund?")
    pairs = answer_sentences(text)
    assert pairs, text
    assert pairs[0] == ("Customers can request a refund within 30 days of purchase.", 2)
    by_number = {s.number: s.text for s in SOURCES}
    for sentence, number in pairs:
        assert sentence in by_number[number]
    assert len(pieces) == len(pairs)  # one sentence per streamed piece


async def test_picks_sentences_from_the_matching_source_only():
    _, text = await answer("Is two-factor authentication mandatory?")
    assert cited_numbers(text) == [3]
    assert "Two-factor authentication is mandatory. [3]" in text
    assert "refund" not in text.lower()


async def test_at_most_three_sentences_and_no_invented_text():
    many = [Source(i, f"t{i}", f"Refund rule number {i} applies to refund requests. Unrelated filler text here.")
            for i in range(1, 7)]
    _, text = await answer("refund rule", many)
    pairs = answer_sentences(text)
    assert 1 <= len(pairs) <= 3
    # Remove every cited sentence and its marker: nothing may be left over.
    leftover = text
    for sentence, number in pairs:
        leftover = leftover.replace(f"{sentence} [{number}]", "", 1)
    assert leftover.strip() == ""


async def test_overlapping_chunks_do_not_repeat_a_sentence():
    repeated = "The backup runs every night at 2am."
    sources = [Source(1, "a", f"Intro text. {repeated}"), Source(2, "a", f"{repeated} Then the logs rotate.")]
    _, text = await answer("When does the backup run?", sources)
    assert text.count(repeated) == 1


async def test_no_relevant_sentence_gives_the_no_answer_message():
    pieces, text = await answer("What is the capital of Mongolia?")
    assert pieces == [NO_ANSWER]
    assert cited_numbers(text) == []


async def test_empty_sources_give_the_no_answer_message():
    pieces, _ = await answer("How do refunds work?", [])
    assert pieces == [NO_ANSWER]


async def test_stopword_only_question_gives_the_no_answer_message():
    pieces, _ = await answer("what is it and how?")
    assert pieces == [NO_ANSWER]


async def test_is_deterministic():
    first = await answer("refund damaged items original payment")
    for _ in range(5):
        assert await answer("refund damaged items original payment") == first


async def test_matches_word_forms():
    # "refunded" in the source, "refunds" in the question.
    _, text = await answer("Are damaged items refunds complete?")
    assert "Damaged items are refunded in full, e.g. broken screens. [2]" in text


def test_sentence_splitting_keeps_abbreviations_and_strips_list_markers():
    text = "Dr. Smith approves refunds! E.g. when damaged, e.g. broken. Done.\n- First item here\n2. Second step"
    assert split_sentences(text) == [
        "Dr. Smith approves refunds!",
        "E.g. when damaged, e.g. broken.",
        "Done.",
        "First item here",
        "Second step",
    ]
    for sentence in split_sentences(text):
        assert sentence in text


async def test_prefers_a_whole_sentence_over_a_chunk_starting_mid_sentence():
    whole = "The audit log keeps every login for one year."
    sources = [
        Source(1, "a", "keeps every login for one year. Other things happen."),  # overlap fragment
        Source(2, "a", f"Intro here. {whole}"),
    ]
    _, text = await answer("How long does the audit log keep logins?", sources)
    assert text.startswith(f"{whole} [2]")


def test_hard_wrapped_paragraphs_keep_sentences_whole():
    text = "Backups run every night\nat 2am and are kept for\n30 days. Restores take an hour.\n\nNext paragraph here."
    assert split_sentences(text) == [
        "Backups run every night\nat 2am and are kept for\n30 days.",
        "Restores take an hour.",
        "Next paragraph here.",
    ]
