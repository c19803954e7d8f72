"""Formats (issue 24): plain text recognised by content (README, NOTES, .rst, .csv, .json,
.log, source code), .pptx / .xlsx / .odt / .epub read through their libraries with the same
limits, binaries refused by content (415).

Fixtures are made here with python-pptx, openpyxl, odfpy and EbookLib (the last two are
not what the service reads with, so the readers are checked against files another
implementation wrote).
"""

from __future__ import annotations

import io
import uuid
import zipfile
from typing import Any

import pytest
from ebooklib import epub
from odf.opendocument import OpenDocumentText
from odf.text import H, P, Span
from openpyxl import Workbook
from pptx import Presentation
from pptx.util import Inches

from rag_service.documents.extraction import (
    CSV,
    EPUB,
    JSON,
    ODT,
    PPTX,
    RST,
    TEXT_PLAIN,
    XLSX,
    ExtractionLimits,
    extract,
    looks_like_text,
)
from rag_service.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType


def make_pptx() -> bytes:
    presentation = Presentation()
    presentation.core_properties.title = "Harbour plan"
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = "Lighthouse schedule"
    slide.placeholders[1].text = "The lamp is lit at dusk."
    table = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(4), Inches(1)).table
    table.cell(0, 0).text, table.cell(0, 1).text = "Pier", "Light"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "green"
    slide.notes_slide.notes_text_frame.text = "Speaker note about the fog horn."
    second = presentation.slides.add_slide(presentation.slide_layouts[5])
    second.shapes.title.text = "Second slide heading"
    out = io.BytesIO()
    presentation.save(out)
    return out.getvalue()


def make_xlsx() -> bytes:
    workbook = Workbook()
    workbook.properties.title = "Inventory"
    sheet = workbook.active
    sheet.title = "Boats"
    sheet.append(["Name", "Length", "Port"])
    sheet.append(["Seagull", 7.5, "Brest"])
    sheet.append(["Albatross", 12, None])
    sheet["E10"] = "=SUM(B2:B3)"
    empty = workbook.create_sheet("Empty")
    assert empty.max_row == 1
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_odt() -> bytes:
    document = OpenDocumentText()
    document.text.addElement(H(outlinelevel=1, text="Tide tables"))
    paragraph = P(text="High water at ")
    paragraph.addElement(Span(text="six in the morning"))
    paragraph.addText(".")
    document.text.addElement(paragraph)
    document.text.addElement(P(text="Low water six hours later."))
    out = io.BytesIO()
    document.write(out)
    return out.getvalue()


def make_epub() -> bytes:
    book = epub.EpubBook()
    book.set_identifier("id-123")
    book.set_title("Sailing stories")
    book.set_language("en")
    first = epub.EpubHtml(title="One", file_name="one.xhtml", lang="en")
    first.content = "<h1>Chapter one</h1><p>The boat left the harbour at dawn.</p><script>alert(1)</script>"
    second = epub.EpubHtml(title="Two", file_name="two.xhtml", lang="en")
    second.content = "<h1>Chapter two</h1><p>A storm came from the west.</p>"
    for chapter in (first, second):
        book.add_item(chapter)
    book.toc = [first, second]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = [first, second]
    out = io.BytesIO()
    epub.write_epub(out, book)
    return out.getvalue()


def test_pptx_slides_tables_and_notes_in_order() -> None:
    result = extract("plan.pptx", make_pptx())
    assert result.mime_type == PPTX and result.title == "Harbour plan"
    content = result.content
    for expected in ("Slide 1", "Lighthouse schedule", "The lamp is lit at dusk.", "Pier | Light",
                     "North | green", "Speaker note about the fog horn.", "Slide 2", "Second slide heading"):
        assert expected in content
    assert content.index("Lighthouse schedule") < content.index("Second slide heading")


def test_xlsx_rows_per_sheet_values_not_formulas() -> None:
    result = extract("inventory.xlsx", make_xlsx())
    assert result.mime_type == XLSX and result.title == "Inventory"
    assert result.content.splitlines()[:4] == ["## Boats", "Name | Length | Port", "Seagull | 7.5 | Brest",
                                                "Albatross | 12"]
    assert "SUM" not in result.content  # data_only: a formula without a cached value is no text
    assert "Empty" not in result.content


def test_odt_headings_and_paragraphs_written_by_odfpy() -> None:
    result = extract("tides.odt", make_odt())
    assert result.mime_type == ODT
    assert result.content == "Tide tables\n\nHigh water at six in the morning.\n\nLow water six hours later."


def test_epub_chapters_in_spine_order_written_by_ebooklib() -> None:
    result = extract("stories.epub", make_epub())
    assert result.mime_type == EPUB and result.title == "Sailing stories"
    assert "alert" not in result.content
    assert result.content.index("The boat left the harbour at dawn.") < result.content.index("A storm came")


@pytest.mark.parametrize("name, make", [("plan", make_pptx), ("inventory", make_xlsx), ("tides", make_odt),
                                        ("stories", make_epub)])
def test_containers_are_recognised_by_content_without_an_extension(name: str, make: Any) -> None:
    assert extract(name, make()).content


@pytest.mark.parametrize("make, kind", [(make_pptx, ".pptx"), (make_xlsx, ".xlsx"), (make_odt, ".odt"),
                                        (make_epub, ".epub")])
def test_an_archive_over_the_inflate_limit_is_413(make: Any, kind: str) -> None:
    # The fixture inflates to some kilobytes: a limit below that is a bomb for this file.
    with pytest.raises(PayloadTooLarge, match="inflates to"):
        extract(f"file{kind}", make(), ExtractionLimits(max_document_chars=100))


def test_a_zip_bomb_named_xlsx_is_refused_before_parsing() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("xl/workbook.xml", "<workbook/>")
        archive.writestr("xl/huge.bin", b"\0" * (30 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge) as refused:
        extract("bomb.xlsx", out.getvalue(), ExtractionLimits(max_document_chars=1_000_000))
    assert refused.value.code == "archive_inflates_too_large"


@pytest.mark.parametrize("make, kind", [(make_pptx, ".pptx"), (make_xlsx, ".xlsx"), (make_odt, ".odt"),
                                        (make_epub, ".epub")])
def test_a_broken_archive_of_each_kind_is_422(make: Any, kind: str) -> None:
    data = bytearray(make())
    # Keep the central directory (so it is sniffed as its kind), corrupt a member's data.
    data[200:600] = b"\xff" * 400
    with pytest.raises(Unprocessable, match=f"not a readable \\{kind} file"):
        extract(f"broken{kind}", bytes(data))


@pytest.mark.parametrize("name, content, mime_type", [
    ("README", "# Project\n\nRun make dev.", TEXT_PLAIN),
    ("NOTES", "meeting notes: ship it", TEXT_PLAIN),
    ("FAQ", "Q: why?\nA: because.", TEXT_PLAIN),
    ("Makefile", "all:\n\techo hi\n", TEXT_PLAIN),
    ("main.py", "def main():\n    return 42\n", TEXT_PLAIN),
    ("lib.rs", "fn main() { println!(\"hi\"); }", TEXT_PLAIN),
    ("guide.rst", "Title\n=====\n\nBody.", RST),
    ("data.csv", "name,port\nSeagull,Brest\n", CSV),
    ("data.tsv", "name\tport\nSeagull\tBrest\n", "text/tab-separated-values"),
    ("config.json", '{"port": 8000}', JSON),
    ("server.log", "2026-01-01 INFO started\n", TEXT_PLAIN),
    ("build-output", "\x1b[31mred\x1b[0m text", TEXT_PLAIN),  # terminal colours are not binary
])
def test_text_is_read_whatever_its_name(name: str, content: str, mime_type: str) -> None:
    result = extract(name, content.encode())
    assert result.mime_type == mime_type
    assert result.content.split()[-1] in content


@pytest.mark.parametrize("name, data", [
    ("photo", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))),
    ("program", b"\x7fELF\x02\x01\x01\x00" + bytes(200)),
    ("archive.tar.gz", b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4),
    ("random.bin", bytes((i * 37 + 11) % 256 for i in range(4096))),
    ("control", b"text\x01\x02\x03\x04\x05\x06" * 100),
])
def test_binary_content_is_415_whatever_its_name(name: str, data: bytes) -> None:
    with pytest.raises(UnsupportedMediaType) as refused:
        extract(name, data)
    assert refused.value.code == "unsupported_media_type"
    assert "binary content" in refused.value.message and ".pptx" in refused.value.message


def test_an_unknown_zip_is_415() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("something.txt", "hello")
    with pytest.raises(UnsupportedMediaType, match="ZIP archive of no supported kind"):
        extract("bundle.zip", out.getvalue())


def test_a_container_named_as_another_is_415() -> None:
    with pytest.raises(UnsupportedMediaType, match="not a .docx"):
        extract("slides.docx", make_pptx())
    with pytest.raises(UnsupportedMediaType, match="binary data"):
        extract("sheet.csv", make_xlsx())


def test_text_sniffing_tolerates_a_character_cut_at_the_window() -> None:
    text = ("é" * 40_000).encode()  # 80,000 bytes: the 65,536-byte window ends mid-character
    assert looks_like_text(text[:65_537] + text[65_537:])
    assert not looks_like_text(b"ok\xff" + b"a" * 10)


async def test_new_formats_upload_and_search_over_http(client: Any, auth_headers: Any) -> None:
    headers = auth_headers(f"user-{uuid.uuid4().hex[:12]}")
    files = [("files", (name, data)) for name, data in (
        ("plan.pptx", make_pptx()), ("inventory.xlsx", make_xlsx()), ("tides.odt", make_odt()),
        ("stories.epub", make_epub()), ("README", b"The harbour master keeps the keys."),
    )]
    response = await client.post("/documents/upload", files=files, headers=headers)
    assert response.status_code == 201, response.text
    assert [item["result"] for item in response.json()["items"]] == ["created"] * 5
    listed = (await client.get("/documents", headers=headers)).json()["documents"]
    assert {d["mime_type"] for d in listed} == {PPTX, XLSX, ODT, EPUB, TEXT_PLAIN}
    hits = (await client.post("/search", json={"query": "who keeps the keys of the harbour", "top_k": 1},
                              headers=headers)).json()["results"]
    assert hits[0]["text"] == "The harbour master keeps the keys."

    refused = await client.post("/documents/upload", headers=headers,
                                files={"files": ("photo", b"\x89PNG\r\n\x1a\n\x00\x00\x00" + bytes(range(256)))})
    assert refused.status_code == 415
    assert refused.json()["error"]["code"] == "unsupported_media_type"
    assert "binary content" in refused.json()["error"]["message"]
