"""Chunking with the real MiniLM tokenizer: window fit, exact offsets, boundaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag_service.documents.chunking import Chunker, chunker_for
from rag_service.documents.extraction import normalize_content
from rag_service.providers.tokenizer import minilm_tokenizer

CORPUS = Path("/work/shared/datasets/manpages-dev/corpus.jsonl")
MINILM_WINDOW = 256


@pytest.fixture(scope="module")
def tokenizer():
    return minilm_tokenizer()


@pytest.fixture(scope="module")
def chunker(tokenizer) -> Chunker:
    return Chunker(tokenizer, capacity=200, overlap=30, max_tokens=MINILM_WINDOW)


def exact_tokens(tokenizer, text: str) -> int:
    return len(tokenizer.encode(text, add_special_tokens=False).ids)


def paragraphs(n: int) -> str:
    return "\n\n".join(
        f"Paragraph {i} talks about topic number {i}. It has a second sentence with more words. "
        f"And a third one, so that it is a real paragraph of some length about item {i}."
        for i in range(n)
    )


def test_tiny_document_is_one_chunk(chunker: Chunker) -> None:
    [chunk] = chunker.split("Just a short note.")
    assert (chunk.index, chunk.text, chunk.start, chunk.end) == (0, "Just a short note.", 0, 18)


def test_blank_content_has_no_chunks(chunker: Chunker) -> None:
    assert chunker.split("") == []
    assert chunker.split("   \n\n  ") == []


def test_chunks_fit_the_window_with_specials_and_title(chunker: Chunker, tokenizer) -> None:
    content = paragraphs(60)
    chunks = chunker.split(content)
    assert len(chunks) > 5
    title = chunker.clip_title("A very long title " * 40)
    for chunk in chunks:
        assert exact_tokens(tokenizer, chunk.text) <= 200
        # What is embedded, with [CLS]/[SEP], still fits MiniLM's 256-token window.
        embedded = chunker.embedding_text(title, chunk.text)
        assert len(tokenizer.encode(embedded).ids) <= MINILM_WINDOW


def test_offsets_slice_the_content_exactly(chunker: Chunker) -> None:
    content = normalize_content("Ünïcödé façade — naïve café. 日本語のテキスト。\n\n" + paragraphs(30) + "\n\nEmoji 🎉 end.")
    chunks = chunker.split(content)
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for chunk in chunks:
        assert content[chunk.start : chunk.end] == chunk.text
    assert chunks[-1].text.endswith("Emoji 🎉 end.")


def test_paragraph_boundaries_are_preserved(chunker: Chunker) -> None:
    content = paragraphs(40)
    for chunk in chunker.split(content):
        # Each chunk starts at a paragraph start and ends at a paragraph end, unless the
        # overlap made it begin mid-paragraph at a sentence boundary.
        assert chunk.text.endswith(".")
        assert chunk.text[0].isupper()


def test_overlap_repeats_text_between_neighbours(tokenizer) -> None:
    chunker = Chunker(tokenizer, capacity=60, overlap=20, max_tokens=MINILM_WINDOW)
    sentences = " ".join(f"Sentence number {i} is here." for i in range(80))
    chunks = chunker.split(sentences)
    assert len(chunks) > 3
    assert any(b.start < a.end for a, b in zip(chunks, chunks[1:]))


def test_huge_paragraph_without_breaks_is_split(chunker: Chunker, tokenizer) -> None:
    content = " ".join(f"word{i}" for i in range(5000))  # one paragraph, no sentence ends
    chunks = chunker.split(content)
    assert len(chunks) > 10
    assert all(exact_tokens(tokenizer, c.text) <= 200 for c in chunks)
    assert all(content[c.start : c.end] == c.text for c in chunks)


def test_a_single_giant_word_is_cut(chunker: Chunker) -> None:
    content = "x" * 20_000
    chunks = chunker.split(content)
    assert "".join(c.text for c in chunks if c.start >= 0).count("x") >= 20_000
    assert chunks[0].start == 0 and chunks[-1].end == 20_000


def test_word_count_cache_matches_the_tokenizer_on_real_text(chunker: Chunker, tokenizer) -> None:
    """The fast counter must agree with the real tokenizer, or chunks could overflow."""
    with CORPUS.open() as lines:
        documents = [json.loads(next(lines)) for _ in range(40)]
    tricky = "naïve\u00a0café\u3000日本 tab\there ｆｕｌｌ ﬁ ligature 🎉 e\u0301 x\u200by"
    for text in [normalize_content(d["text"]) for d in documents] + [normalize_content(tricky)]:
        for chunk in chunker.split(text):
            assert exact_tokens(tokenizer, chunk.text) <= 200


def test_markdown_is_split_at_headings(tokenizer) -> None:
    chunker = Chunker(tokenizer, capacity=60, overlap=0, max_tokens=MINILM_WINDOW)
    sections = "\n\n".join(f"# Section {i}\n\n" + "Some words about this section. " * 6 for i in range(6))
    chunks = chunker.split(sections, "text/markdown")
    assert all(c.text.startswith("# Section") for c in chunks)


def test_title_is_clipped_to_the_free_tokens(chunker: Chunker, tokenizer) -> None:
    assert chunker.title_budget == MINILM_WINDOW - 2 - 200
    assert chunker.clip_title("  short   title ") == "short title"
    long_title = " ".join(f"title{i}" for i in range(200))
    clipped = chunker.clip_title(long_title)
    assert long_title.startswith(clipped)
    assert exact_tokens(tokenizer, clipped) <= chunker.title_budget
    assert chunker.embedding_text("", "body") == "body"
    assert chunker.embedding_text("T", "body") == "T\n\nbody"


def test_capacity_is_clamped_to_the_model_window(tokenizer) -> None:
    chunker = Chunker(tokenizer, capacity=1000, overlap=30, max_tokens=MINILM_WINDOW)
    assert chunker.capacity == MINILM_WINDOW - 2
    assert chunker.title_budget == 0


@pytest.mark.parametrize("capacity, overlap", [(0, 0), (10, 10), (10, -1)])
def test_invalid_sizes_are_refused(tokenizer, capacity: int, overlap: int) -> None:
    with pytest.raises(ValueError):
        Chunker(tokenizer, capacity=capacity, overlap=overlap, max_tokens=MINILM_WINDOW)


def test_chunker_for_an_embedder_without_tokenizer_uses_minilm() -> None:
    class RemoteEmbedder:
        max_tokens = 2048

    chunker = chunker_for(RemoteEmbedder(), chunk_size_tokens=300, chunk_overlap_tokens=50)
    assert (chunker.capacity, chunker.max_tokens) == (300, 2048)
    assert chunker.split("hello world")[0].text == "hello world"
