"""POST /documents/batch over HTTP (real app, real JWTs, SQLite/Postgres, Qdrant Edge, MiniLM):
per-item answers in input order, a bad item never fails the others, request-level limits
change nothing, files go through the extraction sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest

from hostile_files import nested_divs_html, shared_stream_pdf
from rag_service.deps import get_extraction_pool
from rag_service.documents.extraction import ExtractionLimits
from rag_service.core.ingestion_gate import IngestionGate
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits
from test_extraction import make_pdf

TIDES = "Spring tides come with the new and the full moon, when sun and moon pull in a line."
KNOTS = "A bowline makes a fixed loop at the end of a rope that neither slips nor jams under load."
FERRY = "The ferry crosses the strait twice a day and carries cars, bicycles and foot passengers."


def text(title: str, content: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "content": content, **extra}


def results(response: Any) -> list[tuple[str, str | None]]:
    """(result, error code) per item, after checking the answer's shape and order."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert [item["index"] for item in body["items"]] == list(range(len(body["items"])))
    kinds = [item["result"] for item in body["items"]]
    assert (body["created"], body["duplicates"], body["errors"]) == (
        kinds.count("created"), kinds.count("duplicate"), kinds.count("error"))
    return [(item["result"], (item["error"] or {}).get("code")) for item in body["items"]]


async def listing(client: Any, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    body = (await client.get("/documents", params={"limit": 100}, headers=headers)).json()
    return {document["title"]: document for document in body["documents"]}


async def test_json_batch_answers_per_item_in_order(db_client: Any, auth_headers: Any) -> None:
    headers = auth_headers()
    items = [
        text("Tides", TIDES, metadata={"topic": "sea"}),
        text("Empty", "   "),
        text("Tides again", TIDES),                           # the same content as item 0
        text("Knots", KNOTS),
        text("Bad metadata", FERRY, metadata={"a.b": 1}),
        {"title": "Wrong type", "content": 42},
        {"file": 0},                                          # files need multipart
        text("", FERRY + " Untitled."),
        text("Ferry", FERRY),
    ]
    response = await db_client.post("/documents/batch", json={"items": items}, headers=headers)
    assert results(response) == [
        ("created", None), ("error", "unprocessable"), ("duplicate", None), ("created", None),
        ("error", "unprocessable"), ("error", "validation_error"), ("error", "validation_error"),
        ("error", "unprocessable"), ("created", None),
    ]
    answer = response.json()["items"]
    assert answer[2]["document_id"] == answer[0]["document_id"] and answer[2]["title"] == "Tides"
    assert answer[1]["error"] == {"code": "unprocessable", "status": 422,
                                  "message": "content must not be empty or only whitespace"}
    assert "content" in answer[5]["error"]["message"] and "title must not be empty" in answer[7]["message"]
    assert all(item["status"] == "ready" and item["chunk_count"] >= 1 for item in answer if item["result"] != "error")
    stored = await listing(db_client, headers)
    assert sorted(stored) == ["Ferry", "Knots", "Tides"]
    assert stored["Tides"]["metadata"] == {"topic": "sea"}
    detail = (await db_client.get(f"/documents/{answer[3]['document_id']}", headers=headers)).json()
    assert detail["status"] == "ready" and detail["content"] == KNOTS
    summary = (await db_client.get("/documents/summary", headers=headers)).json()
    assert summary["by_status"]["ready"] == 3 and summary["documents"] == 3


async def test_multipart_files_without_a_manifest(client: Any, auth_headers: Any) -> None:
    headers = auth_headers()
    files = [
        ("files", ("tides.txt", TIDES.encode(), "text/plain")),
        ("files", ("tool.exe", b"MZ\x90\x00 not a document", "application/octet-stream")),
        ("files", ("broken.pdf", b"%PDF-1.4 this is not really a PDF", "application/pdf")),
        ("files", ("guide.html", f"<html><head><title>Knot guide</title></head><body><p>{KNOTS}</p></body></html>"
                   .encode(), "text/html")),
        ("files", ("report.pdf", make_pdf([FERRY], title="Ferry report"), "application/pdf")),
    ]
    response = await client.post("/documents/batch", files=files, headers=headers)
    assert results(response) == [("created", None), ("error", "unsupported_media_type"), ("error", "unprocessable"),
                                 ("created", None), ("created", None)]
    answer = response.json()["items"]
    assert answer[1]["error"]["status"] == 415 and "tool.exe" in answer[1]["error"]["message"]
    assert [answer[i]["title"] for i in (0, 3, 4)] == ["tides.txt", "Knot guide", "Ferry report"]
    stored = await listing(client, headers)
    assert stored["Knot guide"]["mime_type"] == "text/html" and stored["Knot guide"]["source_name"] == "guide.html"


async def test_a_manifest_mixes_text_and_files_in_its_own_order(client: Any, auth_headers: Any) -> None:
    headers = auth_headers()
    manifest = {"items": [
        {"file": 1, "title": "Knots", "metadata": {"source_path": "b/knots.md"}},
        text("Ferry", FERRY),
        {"file": 0, "metadata": {"source_path": "a/tides.txt"}},
        {"file": 2, "title": 7},
    ]}
    files = [("files", ("tides.txt", TIDES.encode())), ("files", ("knots.md", f"# Knots\n\n{KNOTS}".encode())),
             ("files", ("ferry-copy.txt", FERRY.encode()))]
    response = await client.post("/documents/batch", data={"manifest": json.dumps(manifest)}, files=files,
                                 headers=headers)
    assert results(response) == [("created", None), ("created", None), ("created", None),
                                 ("error", "validation_error")]
    stored = await listing(client, headers)
    assert stored["Knots"]["metadata"] == {"source_path": "b/knots.md"} and stored["Knots"]["mime_type"] == "text/markdown"
    assert stored["tides.txt"]["metadata"] == {"source_path": "a/tides.txt"}
    assert sorted(stored) == ["Ferry", "Knots", "tides.txt"]


@pytest.mark.parametrize(("request_kwargs", "status", "fragment"), [
    ({"json": {"items": []}}, 422, "no items"),
    ({"json": {"items": [text("T", TIDES)] * 4}}, 413, "limit is 3"),
    ({"json": {"items": [text("T", "x" * 600), text("U", "y" * 600)]}}, 413, "limit is 1000"),
    ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 422, "not valid JSON"),
    ({"json": {"documents": [text("T", TIDES)]}}, 422, '{"items": [...]}'),
    ({"json": [text("T", TIDES)]}, 422, '{"items": [...]}'),
    ({"content": b"title=x", "headers": {"content-type": "application/x-www-form-urlencoded"}}, 415, "multipart"),
    ({"files": [("files", ("a.txt", b"A first file.")), ("files", ("b.txt", b"A second file."))],
      "data": {"manifest": json.dumps({"items": [{"file": 0}]})}}, 422, "used by no manifest item"),
    ({"files": [("files", ("a.txt", b"A first file."))],
      "data": {"manifest": json.dumps({"items": [{"file": 0}, {"file": 0}]})}}, 422, "used by two"),
    ({"files": [("files", ("a.txt", b"A first file."))],
      "data": {"manifest": json.dumps({"items": [{"file": 3}]})}}, 422, "not the index"),
    ({"files": [("files", ("a.txt", b"A first file."))], "data": {"manifest": "[1, 2"}}, 422, "not valid JSON"),
    ({"files": [("files", ("a.txt", b"A first file."))], "data": {"other": "x"}}, 422, "unexpected parts"),
])
async def test_request_level_problems_are_4xx_and_store_nothing(app_factory: Any, make_settings: Any,
                                                                auth_headers: Any, request_kwargs: dict[str, Any],
                                                                status: int, fragment: str) -> None:
    settings = make_settings(max_batch_items=3, max_batch_bytes=1000)
    headers = auth_headers()
    async with app_factory(settings) as (_, client):
        kwargs = dict(request_kwargs)
        response = await client.post("/documents/batch", headers={**headers, **kwargs.pop("headers", {})}, **kwargs)
        assert response.status_code == status, response.text
        assert fragment in response.json()["error"]["message"]
        assert (await client.get("/documents", headers=headers)).json()["total"] == 0


async def test_per_item_size_limits_and_quota(app_factory: Any, make_settings: Any, auth_headers: Any) -> None:
    settings = make_settings(max_document_chars=200, max_upload_bytes=300, max_batch_bytes=10_000,
                             quota_max_documents=2)
    headers = auth_headers()
    async with app_factory(settings) as (_, client):
        manifest = {"items": [text("Long", "word " * 60), {"file": 0}, text("Tides", TIDES), {"file": 1},
                              text("Knots", KNOTS), text("Ferry", FERRY)]}
        files = [("files", ("big.txt", b"b" * 301)), ("files", ("ok.txt", b"A small file that fits."))]
        response = await client.post("/documents/batch", data={"manifest": json.dumps(manifest)}, files=files,
                                     headers=headers)
        assert results(response) == [("error", "payload_too_large"), ("error", "payload_too_large"),
                                     ("created", None), ("created", None), ("error", "quota_exceeded"),
                                     ("error", "quota_exceeded")]
        answer = response.json()["items"]
        assert "200 characters" in answer[0]["message"] and "300 bytes" in answer[1]["message"]
        assert answer[4]["error"]["status"] == 413
        assert (await client.get("/documents", headers=headers)).json()["total"] == 2


async def test_files_are_read_in_the_sandbox_and_a_slow_one_fails_alone(app: Any, client: Any,
                                                                       auth_headers: Any) -> None:
    pool = ExtractionPool(SandboxLimits(workers=1, cpu_seconds=1, timeout_seconds=300), ExtractionLimits())
    app.dependency_overrides[get_extraction_pool] = lambda: pool
    try:
        worker = (await pool.worker_facts())["pid"]
        headers = auth_headers()
        files = [("files", ("slow.pdf", shared_stream_pdf(pages=10, operations=20_000))),
                 ("files", ("deep.html", nested_divs_html(1_000))),
                 ("files", ("fine.txt", TIDES.encode()))]
        response = await client.post("/documents/batch", files=files, headers=headers)
        assert results(response) == [("error", "extraction_cpu_limit"), ("error", "html_too_deep"), ("created", None)]
        assert (await pool.worker_facts())["pid"] != worker, "the worker over its CPU limit was replaced"
    finally:
        app.dependency_overrides.pop(get_extraction_pool, None)
        await pool.aclose()


async def test_after_one_busy_item_the_rest_are_busy_without_waiting(app_factory: Any, make_settings: Any,
                                                                    runtime: Any, auth_headers: Any) -> None:
    import dataclasses

    settings = make_settings()
    gate = IngestionGate(1, wait_seconds=0.2)
    headers = auth_headers()
    async with app_factory(settings, runtime=dataclasses.replace(runtime, settings=settings,
                                                                 ingestion_gate=gate)) as (_, client):
        async with gate.slot():  # every slot taken, as by a long ingestion
            response = await client.post("/documents/batch", headers=headers, json={"items": [
                text("Tides", TIDES), text("Knots", KNOTS), text("Ferry", FERRY)]})
        assert results(response) == [("error", "busy")] * 3
        assert response.json()["items"][2]["error"]["status"] == 503
        again = await client.post("/documents/batch", headers=headers, json={"items": [text("Tides", TIDES)]})
        assert results(again) == [("created", None)]
