"""POST /documents/batch across the real services, through the Python clients: good and bad
items in one request (a bad file type, empty text, an oversize text, duplicates), each
answered in order, the good ones stored and ready; the async client's batch and keys."""

from __future__ import annotations

import pytest

from clients_support import account
from rag_client import AsyncRagClient, BatchFile, BatchText, PermissionDenied, RagClient

TIDES = "Spring tides come with the new and the full moon, when sun and moon pull in a line."
LIGHTHOUSE = "Lighthouse keepers trimmed the lamp wicks every evening so the beam stayed bright all night."
GUIDE = (b"<html><head><title>Knot guide</title></head><body><p>A bowline makes a fixed loop that neither "
         b"slips nor jams.</p></body></html>")


def test_a_batch_of_good_and_bad_items_answers_each_in_order(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        key = owner.create_api_key("loader", "write").key
    with RagClient(rag_url, auth_url, api_key=key) as client:
        stored_before = client.save("Lighthouse", LIGHTHOUSE)
        result = client.batch([
            BatchText("Tides", TIDES, metadata={"topic": "sea"}),
            BatchFile(("tool.exe", b"MZ\x90\x00 a program, not a document")),
            BatchText("Empty", "   \n "),
            BatchText("Huge", "word " * 500_000),        # 2.5 M characters: over MAX_DOCUMENT_CHARS
            BatchText("Lighthouse again", LIGHTHOUSE),   # already stored
            BatchFile(("guide.html", GUIDE), metadata={"source_path": "docs/guide.html"}),
            BatchText("Tides copy", TIDES),              # the same as the first item
            BatchFile(("broken.pdf", b"%PDF-1.7 nothing readable follows")),
        ])
        assert [(item.index, item.result, item.error_code) for item in result.items] == [
            (0, "created", None), (1, "error", "unsupported_media_type"), (2, "error", "unprocessable"),
            (3, "error", "payload_too_large"), (4, "duplicate", None), (5, "created", None),
            (6, "duplicate", None), (7, "error", "unprocessable"),
        ]
        assert (result.created, result.duplicates, result.errors) == (2, 2, 4)
        items = result.items
        assert [items[i].error_status for i in (1, 2, 3, 7)] == [415, 422, 413, 422]
        assert "2000000 characters" in items[3].error_message and "tool.exe" in items[1].error_message
        assert items[4].document_id == stored_before.document_id and items[6].document_id == items[0].document_id
        for created in (items[0], items[5]):
            document = client.get_document(created.document_id)
            assert document.status == "ready" and document.chunk_count >= 1
        assert client.get_document(items[5].document_id).title == "Knot guide"
        summary = client.summary()
        assert summary.documents == 3 and summary.by_status["ready"] == 3
        # The caller's own usage comes first among the owners it can read.
        assert summary.owners[0].organization_id is None and summary.owners[0].documents == 3
        assert summary.owners[0].characters == summary.characters


def test_a_read_key_cannot_batch(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        read_key = owner.create_api_key("reader", "read").key
        with RagClient(rag_url, auth_url, api_key=read_key) as reader:
            with pytest.raises(PermissionDenied) as denied:
                reader.batch([BatchText("Tides", TIDES)])
        assert denied.value.code == "insufficient_scope"
        assert owner.summary().documents == 0


@pytest.mark.asyncio
async def test_the_async_client_batches_and_manages_keys(auth_url: str, rag_url: str) -> None:
    with account(auth_url, rag_url) as owner:
        email = owner.tokens.email
    async with AsyncRagClient(rag_url, auth_url, email=email, password="correct horse battery") as signed_in:
        key = await signed_in.create_api_key("async loader", "write", expires_in_days=1)
        assert key.key and [(k.name, k.scope) for k in await signed_in.list_api_keys()] == [("async loader", "write")]
        async with AsyncRagClient(rag_url, auth_url, api_key=key.key) as client:
            result = await client.batch([BatchText("Tides", TIDES), BatchFile(("guide.html", GUIDE)),
                                         BatchText("", "untitled")])
            assert [item.result for item in result.items] == ["created", "created", "error"]
            assert (await client.summary()).by_status["ready"] == 2
        await signed_in.revoke_api_key(key.id)
        assert await signed_in.list_api_keys() == []
