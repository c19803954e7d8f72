"""Hostile uploads over HTTP (issue 11): each gets its 413/422 with a clear error, nothing
is stored, and while one is being read the service keeps answering everyone else.

The session app is used; a test needing tighter limits swaps the extraction pool through
the `get_extraction_pool` dependency (the documented way to replace a runtime part).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

from hostile_files import (
    corrupt_docx,
    corrupt_pdf,
    docx_zip_bomb,
    many_paragraphs_html,
    nested_divs_html,
    pdf_with_lying_xref,
    shared_stream_pdf,
)
from rag_service.deps import get_extraction_pool
from rag_service.documents.extraction import ExtractionLimits
from rag_service.documents.sandbox import ExtractionPool, SandboxLimits

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@pytest_asyncio.fixture
async def use_pool(app: Any) -> AsyncIterator[Callable[..., ExtractionPool]]:
    """`use_pool(limits, **sandbox)`: the app reads uploads with this pool for the test."""
    pools: list[ExtractionPool] = []

    def use(limits: ExtractionLimits | None = None, **sandbox: Any) -> ExtractionPool:
        pool = ExtractionPool(SandboxLimits(**{"workers": 1, **sandbox}), limits or ExtractionLimits())
        pools.append(pool)
        app.dependency_overrides[get_extraction_pool] = lambda: pool
        return pool

    yield use
    app.dependency_overrides.pop(get_extraction_pool, None)
    for pool in pools:
        await pool.aclose()


async def upload(client: Any, headers: dict[str, str], name: str, data: bytes) -> Any:
    return await client.post("/documents/upload", files={"files": (name, data)}, headers=headers)


async def assert_refused(client: Any, headers: dict[str, str], name: str, data: bytes,
                         status: int, code: str, *fragments: str) -> None:
    response = await upload(client, headers, name, data)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for fragment in (name, *fragments):
        assert fragment in error["message"], error
    listing = (await client.get("/documents", headers=headers)).json()
    assert listing["total"] == 0, "a refused upload must store nothing"


async def test_ten_thousand_paragraphs_are_stored_with_their_paragraphs(client, auth_headers) -> None:
    headers = auth_headers()
    # Short paragraphs: the test is about reading the HTML, not about embedding much text.
    response = await upload(client, headers, "many.html", many_paragraphs_html(10_000, text="p"))
    assert response.status_code == 201, response.text
    document_id = response.json()["documents"][0]["document_id"]
    content = (await client.get(f"/documents/{document_id}", headers=headers)).json()["content"]
    assert content.split("\n\n") == ["p"] * 10_000


async def test_html_over_the_element_cap_is_413(client, auth_headers, use_pool) -> None:
    use_pool(ExtractionLimits(max_html_elements=5_000))
    await assert_refused(client, auth_headers(), "many.html", many_paragraphs_html(10_000),
                         413, "html_too_many_elements", "5000 HTML elements")


async def test_hundred_thousand_nested_divs_are_413(client, auth_headers) -> None:
    await assert_refused(client, auth_headers(), "deep.html", nested_divs_html(100_000),
                         413, "html_too_deep", "deeper than 200 levels")


async def test_docx_zip_bomb_is_413(client, auth_headers, use_pool) -> None:
    use_pool(ExtractionLimits(max_document_chars=100_000))
    await assert_refused(client, auth_headers(), "bomb.docx", docx_zip_bomb(50_000_000),
                         413, "docx_inflates_too_large", "limit is 1000000 bytes")


async def test_pages_sharing_a_huge_content_stream_are_413(client, auth_headers, use_pool) -> None:
    use_pool(ExtractionLimits(max_document_chars=100_000))
    await assert_refused(client, auth_headers(), "shared.pdf", shared_stream_pdf(pages=10, operations=20_000),
                         413, "pdf_content_too_large", "content streams larger than 1000000 bytes")


async def test_pypdf_limit_reached_error_is_422_not_500(client, auth_headers) -> None:
    await assert_refused(client, auth_headers(), "xref.pdf", pdf_with_lying_xref(),
                         422, "unprocessable", "not a readable PDF", "LimitReachedError")


@pytest.mark.parametrize("name, data, fragment", [
    ("corrupt.pdf", corrupt_pdf(), "not a readable PDF"),
    ("corrupt.docx", corrupt_docx(), "not a readable .docx"),
])
async def test_corrupt_files_are_422(client, auth_headers, name: str, data: bytes, fragment: str) -> None:
    await assert_refused(client, auth_headers(), name, data, 422, "unprocessable", fragment)


async def test_cpu_limit_is_422_and_the_next_upload_works(client, auth_headers, use_pool) -> None:
    pool = use_pool(cpu_seconds=1, timeout_seconds=300)
    headers = auth_headers()
    worker = (await pool.worker_facts())["pid"]
    await assert_refused(client, headers, "slow.pdf", shared_stream_pdf(pages=10, operations=20_000),
                         422, "extraction_cpu_limit", "CPU limit of 1 s")
    assert (await pool.worker_facts())["pid"] != worker, "the worker over the limit is replaced"
    response = await upload(client, headers, "fine.txt", b"A normal upload after the hostile one.")
    assert response.status_code == 201, response.text


async def test_the_service_answers_others_while_a_slow_file_is_read(client, auth_headers, use_pool) -> None:
    use_pool(timeout_seconds=5, cpu_seconds=300)
    other = auth_headers()
    # Warm the query embedder first, so the search below does only a search's work.
    assert (await client.post("/search", json={"query": "warm up"}, headers=other)).status_code == 200
    uploader = auth_headers()
    # ~45 s of pypdf work on a loaded 2-core machine (20,000 operations once finished in
    # under 5 s), far past the 5 s limit, yet under the content-stream cap.
    in_flight = asyncio.create_task(upload(client, uploader, "slow.pdf",
                                           shared_stream_pdf(pages=10, operations=80_000)))
    await asyncio.sleep(0)  # let the upload start
    health = await client.get("/health")
    search = await client.post("/search", json={"query": "anything at all"}, headers=other)
    listing = await client.get("/documents", headers=other)
    assert (health.status_code, search.status_code, listing.status_code) == (200, 200, 200)
    assert not in_flight.done(), "other requests were answered while the slow file was being read"
    response = await in_flight
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "extraction_time_limit"
    assert "time limit of 5 s" in response.json()["error"]["message"]
    assert (await client.get("/documents", headers=uploader)).json()["total"] == 0


async def test_a_hostile_file_among_several_is_refused_alone(client, auth_headers) -> None:
    headers = auth_headers()
    files = [("files", ("good.txt", b"A perfectly good file.")), ("files", ("deep.html", nested_divs_html(1_000)))]
    response = await client.post("/documents/upload", files=files, headers=headers)
    assert response.status_code == 201, response.text
    good, deep = response.json()["items"]
    assert good["result"] == "created"
    assert deep["result"] == "error" and deep["error"]["code"] == "html_too_deep" and deep["error"]["status"] == 413
    listed = (await client.get("/documents", headers=headers)).json()
    assert [d["id"] for d in listed["documents"]] == [good["document_id"]]
