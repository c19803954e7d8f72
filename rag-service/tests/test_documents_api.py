"""The documents routes over HTTP (real app, real JWTs, SQLite, Qdrant Edge, MiniLM)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import pytest_asyncio
from test_extraction import make_docx, make_pdf

from rag_service.storage.access import Access, access_filter

TEXT = "The heron waits in the shallows at dawn, still as a reed, for the silver fish."


async def total_documents(client, headers) -> int:
    response = await client.get("/documents", headers=headers)
    assert response.status_code == 200
    return response.json()["total"]


def assert_error(response, status: int, *fragments: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] and error["message"]
    for fragment in fragments:
        assert fragment in error["message"]
    return error


async def test_embed_returns_a_query_vector(client, auth_headers) -> None:
    response = await client.post("/embed", json={"text": "hello world"}, headers=auth_headers())
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and len(body["embedding"]) == 384


async def test_embed_rejects_bad_input(client, auth_headers, runtime) -> None:
    headers = auth_headers()
    assert_error(await client.post("/embed", json={"text": ""}, headers=headers), 422)
    assert_error(await client.post("/embed", json={"text": "   "}, headers=headers), 422)
    limit = runtime.settings.max_embed_chars
    assert_error(await client.post("/embed", json={"text": "x" * (limit + 1)}, headers=headers), 413, str(limit))
    assert_error(await client.post("/embed", json={"text": "hi"}), 401)


async def test_save_then_duplicate_then_other_user(client, auth_headers, runtime, user_id) -> None:
    headers = auth_headers(user_id)
    body = {"title": "Heron", "content": TEXT, "metadata": {"kind": "poem", "year": 2024}}
    created = await client.post("/save-document", json=body, headers=headers)
    assert created.status_code == 201, created.text
    first = created.json()
    assert first["success"] is True and "saved" in first["message"]

    again = await client.post("/save-document", json={**body, "title": "Renamed"}, headers=headers)
    assert again.status_code == 200
    assert again.json() == {"document_id": first["document_id"], "success": True, "message": "document already exists"}

    other = await client.post("/save-document", json=body, headers=auth_headers())
    assert other.status_code == 201 and other.json()["document_id"] != first["document_id"]

    document = (await client.get(f"/documents/{first['document_id']}", headers=headers)).json()
    assert document["content"] == TEXT and document["status"] == "ready"
    assert document["metadata"] == {"kind": "poem", "year": 2024} and document["mime_type"] == "text/plain"
    count = await runtime.vector_store.count(access_filter(Access(user_id), document_ids=[first["document_id"]]))
    assert count == document["chunk_count"] == 1


async def test_another_users_document_is_404_and_untouched(client, auth_headers, user_id) -> None:
    owner = auth_headers(user_id)
    doc_id = (await client.post("/save-document", json={"title": "Mine", "content": "private " + TEXT},
                                headers=owner)).json()["document_id"]
    intruder = auth_headers()
    assert_error(await client.get(f"/documents/{doc_id}", headers=intruder), 404)
    assert_error(await client.delete(f"/documents/{doc_id}", headers=intruder), 404)
    listing = (await client.get("/documents", headers=intruder)).json()
    assert listing["total"] == 0 and listing["documents"] == []
    still_there = await client.get(f"/documents/{doc_id}", headers=owner)
    assert still_there.status_code == 200 and still_there.json()["id"] == doc_id
    assert_error(await client.get("/documents/not-a-real-id", headers=owner), 404)


async def test_delete_removes_document_and_vectors(client, auth_headers, runtime, user_id) -> None:
    headers = auth_headers(user_id)
    doc_id = (await client.post("/save-document", json={"title": "Bye", "content": "Temporary " + TEXT},
                                headers=headers)).json()["document_id"]
    response = await client.delete(f"/documents/{doc_id}", headers=headers)
    assert response.status_code == 200 and response.json() == {"success": True, "document_id": doc_id}
    assert_error(await client.get(f"/documents/{doc_id}", headers=headers), 404)
    assert await runtime.vector_store.count(access_filter(Access(user_id))) == 0
    assert_error(await client.delete(f"/documents/{doc_id}", headers=headers), 404)


async def test_list_pagination_and_isolation(client, auth_headers, runtime) -> None:
    headers = auth_headers()
    for i in range(5):
        response = await client.post("/save-document", json={"title": f"Note {i}", "content": f"Note body {i}."},
                                     headers=headers)
        assert response.status_code == 201
    page = (await client.get("/documents?page=2&limit=2", headers=headers)).json()
    assert (page["total"], page["page"], page["pages"]) == (5, 2, 3)
    assert [d["title"] for d in page["documents"]] == ["Note 2", "Note 1"]
    summary = page["documents"][0]
    assert set(summary) >= {"id", "title", "source_name", "mime_type", "status", "chunk_count", "metadata",
                            "created_at", "updated_at"}
    assert "content" not in summary
    too_big = runtime.settings.max_page_size + 1
    assert_error(await client.get(f"/documents?limit={too_big}", headers=headers), 422, str(too_big - 1))
    assert_error(await client.get("/documents?page=0", headers=headers), 422)
    assert_error(await client.get("/documents?page=abc", headers=headers), 422)


async def test_upload_every_supported_type(client, auth_headers, user_id) -> None:
    headers = auth_headers(user_id)
    html = b"<html><head><title>Web page</title><script>x()</script></head><body><p>Hypertext body.</p></body></html>"
    files = [
        ("files", ("plain.txt", b"Plain text body.", "text/plain")),
        ("files", ("notes.md", b"# Notes\n\nMarkdown body.", "text/markdown")),
        ("files", ("page.html", html, "text/html")),
        ("files", ("paper.pdf", make_pdf(["Portable document body."]), "application/pdf")),
        ("files", ("../../report.docx", make_docx(), "application/octet-stream")),
    ]
    response = await client.post("/documents/upload", files=files, data={"metadata": '{"batch": 1}'},
                                 headers=headers)
    assert response.status_code == 201, response.text
    results = response.json()["documents"]
    assert response.json()["success"] is True and all(r["created"] for r in results)
    assert [r["title"] for r in results] == ["plain.txt", "notes.md", "Web page", "paper.pdf", "Quarterly report"]
    listing = (await client.get("/documents", headers=headers)).json()["documents"]
    by_name = {d["source_name"]: d for d in listing}
    assert set(by_name) == {"plain.txt", "notes.md", "page.html", "paper.pdf", "report.docx"}
    assert by_name["paper.pdf"]["mime_type"] == "application/pdf"
    assert by_name["notes.md"]["mime_type"] == "text/markdown"
    assert all(d["status"] == "ready" and d["metadata"] == {"batch": 1} for d in listing)
    detail = (await client.get(f"/documents/{by_name['page.html']['id']}", headers=headers)).json()
    assert "Hypertext body." in detail["content"] and "x()" not in detail["content"]

    again = await client.post("/documents/upload", files=files[:1], headers=headers)
    assert again.status_code == 200 and again.json()["documents"][0]["created"] is False


async def test_a_placeholder_title_inside_a_file_gives_way_to_its_filename(client, auth_headers) -> None:
    headers = auth_headers()
    html = b"<html><head><title>Untitled Document</title></head><body><p>Heron notes.</p></body></html>"
    files = [
        ("files", ("manpage.pdf", make_pdf(["Enscript printed this manual page."], title="Enscript Output"),
                   "application/pdf")),
        ("files", ("minutes.docx", make_docx(title="Microsoft Word - minutes.doc"), "application/octet-stream")),
        ("files", ("herons.html", html, "text/html")),
        ("files", ("kept.pdf", make_pdf(["A real title stays."], title="Field Guide to Herons"), "application/pdf")),
    ]
    response = await client.post("/documents/upload", files=files, headers=headers)
    assert response.status_code == 201, response.text
    stored = response.json()["documents"]
    assert [(d["title"], d["source_name"]) for d in stored] == [
        ("manpage.pdf", "manpage.pdf"), ("minutes.docx", "minutes.docx"), ("herons.html", "herons.html"),
        ("Field Guide to Herons", "kept.pdf")]
    listing = (await client.get("/documents", headers=headers)).json()["documents"]
    assert {d["source_name"]: d["title"] for d in listing}["kept.pdf"] == "Field Guide to Herons"


async def test_upload_with_title(client, auth_headers) -> None:
    headers = auth_headers()
    response = await client.post("/documents/upload", files={"files": ("a.txt", b"Titled body.")},
                                 data={"title": "Given title"}, headers=headers)
    assert response.status_code == 201 and response.json()["documents"][0]["title"] == "Given title"


@pytest.mark.parametrize(
    "files, data, status, fragment",
    [
        ([("files", ("image.png", b"\x89PNG\r\n\x1a\n"))], {}, 415, ".pdf"),
        ([("files", ("bad.txt", b"caf\xe9"))], {}, 422, "UTF-8"),
        ([("files", ("fake.pdf", b"not a pdf"))], {}, 415, "not a .pdf"),
        ([("files", ("ok.txt", b"fine"))], {"metadata": "{not json"}, 422, "JSON"),
        ([("files", ("ok.txt", b"fine"))], {"metadata": "[1, 2]"}, 422, "object"),
        ([("files", ("ok.txt", b"fine")), ("files", ("b.txt", b"more"))], {"title": "One"}, 422, "single file"),
        ([("files", ("blank.txt", b"   \n "))], {}, 422, "no text"),
    ],
)
async def test_bad_uploads_change_nothing(client, auth_headers, files, data, status, fragment) -> None:
    headers = auth_headers()
    before = await total_documents(client, headers)
    assert_error(await client.post("/documents/upload", files=files, data=data, headers=headers), status, fragment)
    assert await total_documents(client, headers) == before == 0


async def test_an_upload_of_several_files_answers_per_file(client, auth_headers, make_settings, app_factory) -> None:
    """A refused file (unreadable, binary, over the quota) is its own answer: the files before
    and after it are stored and said so, never stored silently behind an error."""
    headers = auth_headers()
    files = [("files", ("first.txt", b"The first file is fine.")),
             ("files", ("image.png", b"\x89PNG\r\n\x1a\n\x00\x00")),
             ("files", ("bad.txt", b"caf\xe9")),
             ("files", ("last.txt", b"The last file is fine too."))]
    response = await client.post("/documents/upload", files=files, headers=headers)
    assert response.status_code == 201, response.text
    body = response.json()
    assert [item["result"] for item in body["items"]] == ["created", "error", "error", "created"]
    assert [item["index"] for item in body["items"]] == [0, 1, 2, 3]
    assert [item["error"]["status"] for item in body["items"][1:3]] == [415, 422]
    assert (body["created"], body["duplicates"], body["errors"], body["success"]) == (2, 0, 2, False)
    stored = {d["title"]: d["document_id"] for d in body["documents"]}
    assert set(stored) == {"first.txt", "last.txt"}
    assert await total_documents(client, headers) == 2

    again = await client.post("/documents/upload", files=files, headers=headers)
    assert again.status_code == 200  # nothing new: duplicates and the same two refusals
    assert [item["result"] for item in again.json()["items"]] == ["duplicate", "error", "error", "duplicate"]

    # The quota refuses the file that does not fit, not the request: the earlier one stays
    # stored and the answer says which is which.
    async with app_factory(make_settings(quota_max_documents=1)) as (_, quota_client):
        quota = await quota_client.post("/documents/upload", headers=headers, files=[
            ("files", ("one.txt", b"Fits the quota.")), ("files", ("two.txt", b"Over the quota."))])
        assert quota.status_code == 201, quota.text
        items = quota.json()["items"]
        assert [item["result"] for item in items] == ["created", "error"]
        assert items[1]["error"]["code"] == "quota_exceeded" and items[1]["error"]["status"] == 413
        listed = (await quota_client.get("/documents", headers=headers)).json()
        assert [d["source_name"] for d in listed["documents"]] == ["one.txt"]


async def test_upload_without_files_is_422(client, auth_headers) -> None:
    assert_error(await client.post("/documents/upload", data={"title": "x"}, headers=auth_headers()), 422)


@pytest.mark.parametrize(
    "body, status",
    [
        ({"title": "T", "content": ""}, 422),
        ({"title": "T", "content": " \n\t "}, 422),
        ({"title": "", "content": "text"}, 422),
        ({"content": "text"}, 422),
        ({"title": "T", "content": "text", "metadata": {"a": {"b": {"c": {"d": {"e": {}}}}}}}, 422),
        ({"title": "T", "content": "text", "metadata": "string"}, 422),
        ({"title": "T", "content": "text", "unknown": 1}, 422),
    ],
)
async def test_bad_save_requests_change_nothing(client, auth_headers, body, status) -> None:
    headers = auth_headers()
    assert_error(await client.post("/save-document", json=body, headers=headers), status)
    assert await total_documents(client, headers) == 0


async def test_routes_require_a_token(client) -> None:
    for method, path in [("get", "/documents"), ("get", "/documents/x"), ("delete", "/documents/x")]:
        assert_error(await getattr(client, method)(path), 401)
    assert_error(await client.post("/save-document", json={"title": "t", "content": "c"}), 401)
    assert_error(await client.post("/documents/upload", files={"files": ("a.txt", b"x")}), 401)


@pytest_asyncio.fixture
async def small_limits(app_factory, make_settings):
    settings = make_settings(max_document_chars=100, max_upload_bytes=2_000, max_files_per_upload=2)
    async with app_factory(settings) as (app, client):
        yield client


async def test_size_limits_are_413_and_change_nothing(small_limits, auth_headers) -> None:
    client, headers = small_limits, auth_headers()
    assert_error(await client.post("/save-document", json={"title": "T", "content": "x " * 60}, headers=headers),
                 413, "100 characters")
    assert_error(await client.post("/documents/upload", files={"files": ("big.txt", b"y" * 2_001)}, headers=headers),
                 413, "2000 bytes")
    three = [("files", (f"{i}.txt", f"file {i}".encode())) for i in range(3)]
    assert_error(await client.post("/documents/upload", files=three, headers=headers), 413, "2 per request")
    assert_error(await client.post("/documents/upload", files={"files": ("long.txt", b"word " * 30)},
                                   headers=headers), 413, "100 characters")
    assert await total_documents(client, headers) == 0
    ok = await client.post("/save-document", json={"title": "T", "content": "short"}, headers=headers)
    assert ok.status_code == 201


async def test_metadata_json_string_is_parsed(client, auth_headers) -> None:
    headers = auth_headers()
    metadata = {"tags": ["a", "b"], "nested": {"level": 2}, "flag": True}
    response = await client.post("/documents/upload", files={"files": ("m.txt", b"With metadata.")},
                                 data={"metadata": json.dumps(metadata)}, headers=headers)
    doc_id = response.json()["documents"][0]["document_id"]
    assert (await client.get(f"/documents/{doc_id}", headers=headers)).json()["metadata"] == metadata
