"""Size bounds (issue 24): every chunk is bounded in tokens and characters whatever the
text, search and chat answers stay within their documented maximum, stored answers are
cut at MAX_ANSWER_CHARS and chat history counts toward its own per-user quota.

The attack texts are the ones found from outside: `'x' * 1_000_000` in a .txt (stored as
ONE chunk before), one huge line, a 2 MB table cell, text without any whitespace.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import pytest

from rag_service.documents.chunking import Chunk, Chunker
from rag_service.documents.extraction import normalize_content
from rag_service.providers.tokenizer import minilm_tokenizer

CAPACITY = 200
MAX_CHARS = 2_000


@pytest.fixture(scope="module")
def chunker() -> Chunker:
    return Chunker(minilm_tokenizer(), capacity=CAPACITY, overlap=30, max_tokens=256, max_chars=MAX_CHARS)


def assert_bounded_cover(chunker: Chunker, content: str, chunks: list[Chunk]) -> None:
    """Every chunk within both bounds, at its exact offsets, and together they cover every
    non-blank character of the content (nothing is dropped to meet a bound)."""
    assert chunks
    covered_to = 0
    for index, chunk in enumerate(chunks):
        assert chunk.index == index
        assert content[chunk.start:chunk.end] == chunk.text
        assert len(chunk.text) <= chunker.max_chars
        assert chunker.count_tokens(chunk.text) <= chunker.capacity
        assert not content[covered_to:chunk.start].strip(), f"text between chunks was dropped at {covered_to}"
        covered_to = max(covered_to, chunk.end)
    assert not content[covered_to:].strip()


# (text, how it is chunked)
ATTACKS = {
    "one_million_x": (lambda: "x" * 1_000_000, "text/plain"),
    "two_mb_table_cell": (lambda: "| name | cell |\n| --- | --- |\n| a | " + "ab" * 1_000_000 + " |", "text/markdown"),
    "one_huge_line_of_words": (lambda: ("word " * 100_000).strip(), "text/plain"),
    "cjk_without_spaces": (lambda: "漢字仮名交じり文" * 4_000, "text/markdown"),
    "base64_blob": (lambda: base64.b64encode(os.urandom(30_000)).decode(), "text/plain"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_every_chunk_is_bounded_whatever_the_text(chunker: Chunker, attack: str) -> None:
    make, mime_type = ATTACKS[attack]
    content = normalize_content(make())
    assert_bounded_cover(chunker, content, chunker.split(content, mime_type))


def test_a_long_word_inside_prose_is_cut_and_the_prose_kept(chunker: Chunker) -> None:
    content = "A sentence before the blob.\n\n" + "z" * 50_000 + "\n\nA sentence after the blob."
    chunks = chunker.split(content)
    assert_bounded_cover(chunker, content, chunks)
    assert chunks[0].text == "A sentence before the blob."
    assert chunks[-1].text == "A sentence after the blob."


def test_ordinary_prose_is_chunked_by_tokens_as_before(chunker: Chunker) -> None:
    # The character bound must not change chunking of real text: 200 tokens of prose are
    # far below 2,000 characters, and chunks end at sentence boundaries.
    content = " ".join(f"Sentence number {i} says something ordinary about topic {i}." for i in range(400))
    chunks = chunker.split(content)
    assert_bounded_cover(chunker, content, chunks)
    assert max(chunker.count_tokens(c.text) for c in chunks) > CAPACITY - 20
    assert all(c.text.endswith(".") for c in chunks)


def test_max_chars_below_the_token_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        Chunker(minilm_tokenizer(), capacity=200, overlap=0, max_tokens=256, max_chars=100)


# --- over HTTP ------------------------------------------------------------------------

SMALL = {"chunk_max_chars": 400, "max_answer_chars": 300, "quota_max_history_characters": 2_000}


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


async def test_a_huge_word_is_stored_as_bounded_chunks_and_search_answers_stay_bounded(
    app_factory: Any, make_settings: Any, auth_headers: Any
) -> None:
    settings = make_settings(**SMALL)
    headers = auth_headers(new_user())
    async with app_factory(settings) as (_, client):
        upload = await client.post("/documents/upload", headers=headers,
                                   files={"files": ("blob.txt", b"x" * 12_000)})
        assert upload.status_code == 201, upload.text
        document_id = upload.json()["documents"][0]["document_id"]
        detail = (await client.get(f"/documents/{document_id}", headers=headers)).json()
        assert detail["status"] == "ready"
        assert detail["chunk_count"] == 30  # 12,000 characters / 400 per chunk

        search = await client.post("/search", headers=headers, json={"query": "x", "top_k": 50, "mode": "dense"})
        assert search.status_code == 200, search.text
        results = search.json()["results"]
        assert results and all(len(hit["text"]) <= settings.chunk_max_chars for hit in results)
        # The documented bound (README "Limits"): top_k x (chunk + title + metadata + ~300 B).
        per_hit = settings.chunk_max_chars * 4 + settings.max_title_chars * 4 + settings.max_metadata_bytes + 300
        assert len(search.content) <= 50 * per_hit + 384 * 25


async def test_chat_answers_are_cut_at_max_answer_chars_and_stored_so(
    app_factory: Any, make_settings: Any, auth_headers: Any
) -> None:
    settings = make_settings(**{**SMALL, "quota_max_history_characters": 0})
    headers = auth_headers(new_user())
    sentences = " ".join(f"Bread rises because yeast makes gas, reason number {i}." for i in range(60))
    async with app_factory(settings) as (_, client):
        saved = await client.post("/save-document", headers=headers, json={"title": "Bread", "content": sentences})
        assert saved.status_code == 201, saved.text
        answer = await client.post("/chat", headers=headers, json={"query": "Why does bread rise?", "top_k": 20})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert 0 < len(body["response"]) <= settings.max_answer_chars
        assert all(len(text) <= settings.chunk_max_chars for text in body["context_used"])
        stored = (await client.get(f"/history/{body['conversation_id']}", headers=headers)).json()
        assert stored["messages"][1]["content"] == body["response"]
        assert stored["messages"][1]["status"] == "complete"

        streamed = await client.post("/chat", headers=headers,
                                     json={"query": "Why does bread rise?", "top_k": 20, "stream": True})
        deltas = [json.loads(line[5:])["text"] for line in streamed.text.splitlines()
                  if line.startswith("data:") and '"text"' in line]
        assert 0 < len("".join(deltas)) <= settings.max_answer_chars


async def test_history_counts_toward_its_quota_and_deleting_conversations_frees_it(
    app_factory: Any, make_settings: Any, auth_headers: Any
) -> None:
    settings = make_settings(**SMALL)
    alice, bob = auth_headers(new_user()), auth_headers(new_user())
    question = "What does the note say about the harbour lights? " * 8  # 400 characters
    async with app_factory(settings) as (_, client):
        await client.post("/save-document", headers=alice,
                          json={"title": "Harbour", "content": "The harbour lights are green at night."})
        conversations = []
        refused = None
        for _ in range(10):
            response = await client.post("/chat", headers=alice, json={"query": question})
            if response.status_code != 200:
                refused = response
                break
            conversations.append(response.json()["conversation_id"])
        assert refused is not None, "ten turns of 400+ characters fit a 2,000-character history quota"
        assert refused.status_code == 413
        error = refused.json()["error"]
        assert error["code"] == "history_quota_exceeded"
        assert "QUOTA_MAX_HISTORY_CHARACTERS" in error["message"]
        # Each turn stores the question and an answer of at most MAX_ANSWER_CHARS: the
        # quota is overshot by at most one turn.
        assert len(conversations) * len(question) <= settings.quota_max_history_characters + len(question)
        # Another user is not affected.
        assert (await client.post("/chat", headers=bob, json={"query": question})).status_code == 200

        for conversation_id in conversations:
            assert (await client.delete(f"/history/{conversation_id}", headers=alice)).status_code == 200
        assert (await client.post("/chat", headers=alice, json={"query": question})).status_code == 200


async def test_deleting_a_huge_document_leaves_only_bounded_answers_in_history(
    app_factory: Any, make_settings: Any, auth_headers: Any
) -> None:
    # The attack from outside: answers quoting a 1.9 MB chunk were stored whole on every
    # turn and stayed after the document was deleted. Chunks are bounded now, answers too.
    settings = make_settings(**{**SMALL, "quota_max_history_characters": 0})
    headers = auth_headers(new_user())
    huge = "Harbour. " + "y" * 6_000 + " The harbour lights are green."
    async with app_factory(settings) as (_, client):
        saved = await client.post("/save-document", headers=headers, json={"title": "Blob", "content": huge})
        assert saved.status_code == 201, saved.text
        conversation = None
        for _ in range(3):
            body = {"query": "What colour are the harbour lights?", "top_k": 20}
            if conversation:
                body["conversation_id"] = conversation
            answer = await client.post("/chat", headers=headers, json=body)
            assert answer.status_code == 200, answer.text
            conversation = answer.json()["conversation_id"]
        assert (await client.delete(f"/documents/{saved.json()['document_id']}", headers=headers)).status_code == 200

        stored = await client.get(f"/history/{conversation}", headers=headers)
        messages = stored.json()["messages"]
        assert len(messages) == 6
        for message in messages:
            assert len(message["content"]) <= settings.max_answer_chars
            assert all(len(source["snippet"]) <= 240 for source in message["sources"])
        # Three turns of at most one answer and 20 sources each: kilobytes, not megabytes.
        assert len(stored.content) < 3 * (settings.max_answer_chars + 20 * 700) + 2_000
