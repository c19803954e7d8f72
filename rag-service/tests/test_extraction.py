"""File extraction on real files: a hand-built PDF, a python-docx document, HTML, text."""

from __future__ import annotations

import io
import zipfile

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from hostile_files import pdf_bytes
from rag_service.documents.extraction import (
    DOCX,
    HTML,
    MARKDOWN,
    PDF,
    TEXT_PLAIN,
    content_hash,
    extract,
    normalize_content,
    sanitize_source_name,
)
from rag_service.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType


def make_pdf(lines: list[str], title: str | None = None) -> bytes:
    """A minimal valid one-page PDF with a Helvetica text object (correct xref offsets)."""
    text_ops = ["BT", "/F1 12 Tf", "72 720 Td", "14 TL"]
    for line in lines:
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        text_ops.append(f"({escaped}) Tj T*")
    text_ops.append("ET")
    stream = "\n".join(text_ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    if title:
        objects.append(b"<< /Title (" + title.encode("latin-1") + b") >>")
    return pdf_bytes(objects, info=len(objects) if title else None)


def make_docx(title: str | None = "Quarterly report") -> bytes:
    document = docx.Document()
    if title:
        document.core_properties.title = title
    document.add_heading("Revenue", level=1)
    document.add_paragraph("Revenue grew by twelve percent.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Region", "Sales"
    table.cell(1, 0).text, table.cell(1, 1).text = "North", "42"
    document.add_paragraph("Closing remarks after the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_plain_text_with_bom_and_crlf() -> None:
    result = extract("notes.txt", "\ufeffFirst line  \r\nSecond line\r\n\r\n".encode("utf-8"))
    assert (result.mime_type, result.content, result.title) == (TEXT_PLAIN, "First line\nSecond line", None)


def test_utf16_with_bom_is_read() -> None:
    assert extract("u16.txt", "héllo wörld".encode("utf-16")).content == "héllo wörld"


def test_markdown_keeps_its_type() -> None:
    result = extract("README.md", b"# Title\n\nBody text.")
    assert result.mime_type == MARKDOWN and result.content == "# Title\n\nBody text."


def test_invalid_utf8_is_422_with_a_clear_message() -> None:
    with pytest.raises(Unprocessable, match="not valid UTF-8.*offset 6"):
        extract("bad.txt", b"hello \xff\xfe\xfd world")


def test_nul_bytes_in_text_are_refused() -> None:
    with pytest.raises(Unprocessable, match="NUL"):
        extract("bin.txt", b"abc\x00def")


def test_empty_text_file_is_422() -> None:
    with pytest.raises(Unprocessable, match="no text"):
        extract("empty.txt", b"  \n\t\n")


def test_html_drops_scripts_and_styles_and_keeps_the_title() -> None:
    html = b"""<!doctype html><html><head><title> My  Page </title><style>p{color:red}</style>
    <script>alert('x')</script></head><body><h1>Heading</h1><p>First <b>bold</b> paragraph.</p>
    <div>Second<br>line</div><noscript>enable js</noscript>
    <table><tr><td>a</td><td>b</td></tr></table><script>var secret = 1;</script></body></html>"""
    result = extract("page.html", html)
    assert result.mime_type == HTML and result.title == "My Page"
    assert "First bold paragraph." in result.content
    assert "Second\nline" in result.content
    assert "Heading" in result.content and "a | b" in result.content
    for hidden in ("alert", "color:red", "secret", "enable js"):
        assert hidden not in result.content


def test_html_charset_is_honoured() -> None:
    html = '<html><head><meta charset="iso-8859-1"><title>t</title></head><body><p>café</p></body></html>'
    assert "café" in extract("latin.htm", html.encode("iso-8859-1")).content


@pytest.mark.parametrize("placeholder", ["Enscript Output", "Untitled", "untitled document", "Document1",
                                         "Microsoft Word - notes.doc", "  ", "---", "PowerPoint Presentation"])
def test_a_placeholder_title_is_no_title(placeholder: str) -> None:
    pdf = extract("man.pdf", make_pdf(["Manual page text."], title=placeholder))
    document = extract("notes.docx", make_docx(title=placeholder))
    html = extract("page.html", f"<html><head><title>{placeholder}</title></head><body>Body.</body></html>".encode())
    assert (pdf.title, document.title, html.title) == (None, None, None)


@pytest.mark.parametrize("title", ["Untitled Symphony notes", "Document management policy", "Q3", "Book of Kells"])
def test_a_title_that_names_something_is_kept(title: str) -> None:
    assert extract("notes.docx", make_docx(title=title)).title == title


def test_pdf_text_and_title() -> None:
    data = make_pdf(["Hello from a PDF file.", "Second line (with parens)."], title="PDF Title")
    result = extract("report.pdf", data)
    assert result.mime_type == PDF and result.title == "PDF Title"
    assert "Hello from a PDF file." in result.content
    assert "Second line (with parens)." in result.content


def test_pdf_without_text_is_422() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=612, height=792)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(Unprocessable, match="no extractable text"):
        extract("scan.pdf", out.getvalue())


def test_encrypted_pdf_is_422() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["secret text"]))))
    writer.encrypt(user_password="pw", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(Unprocessable, match="encrypted"):
        extract("locked.pdf", out.getvalue())


def test_pdf_encrypted_with_an_empty_password_is_read() -> None:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["open text"]))))
    writer.encrypt(user_password="", owner_password="owner", algorithm="AES-128")
    out = io.BytesIO()
    writer.write(out)
    assert "open text" in extract("restricted.pdf", out.getvalue()).content


def test_truncated_pdf_is_422() -> None:
    with pytest.raises(Unprocessable):
        extract("broken.pdf", b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog")


def test_docx_paragraphs_and_tables_in_order() -> None:
    result = extract("report.docx", make_docx())
    assert result.mime_type == DOCX and result.title == "Quarterly report"
    content = result.content
    assert content.index("Revenue grew") < content.index("Region | Sales") < content.index("Closing remarks")
    assert "North | 42" in content


def test_docx_zip_bomb_is_refused() -> None:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/document.xml", "<w/>")
        archive.writestr("word/huge.bin", b"\0" * (210 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge):
        extract("bomb.docx", out.getvalue())


@pytest.mark.parametrize("name", ["image.png", "archive.zip", "program.exe", "noextension", "sheet.xlsx"])
def test_unsupported_types_are_415_listing_the_supported_ones(name: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=r"supported: \.csv, \.docx, \.epub, \.html, .*\.xlsx, and text files of any name"):
        extract(name, b"\x89PNG\r\n\x1a\n binary")


def test_content_must_match_the_extension() -> None:
    with pytest.raises(UnsupportedMediaType, match="not a .pdf"):
        extract("fake.pdf", b"just text")
    with pytest.raises(UnsupportedMediaType, match="not a .docx"):
        extract("fake.docx", b"PK\x03\x04 not really a zip")
    with pytest.raises(UnsupportedMediaType, match="binary"):
        extract("renamed.txt", make_pdf(["x"]))


def test_a_pdf_without_extension_is_sniffed() -> None:
    assert extract("download", make_pdf(["sniffed text"])).mime_type == PDF
    assert extract("download2", make_docx()).mime_type == DOCX


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\config", "config"),
        ("/abs/path/file.txt", "file.txt"),
        ("evil\x00.txt", "evil.txt"),
        ("..", "upload"),
        ("", "upload"),
        (None, "upload"),
        (".hidden.md", "hidden.md"),
        ("a/b/../c.md", "c.md"),
    ],
)
def test_source_names_are_sanitized(raw: str | None, expected: str) -> None:
    assert sanitize_source_name(raw) == expected


def test_very_long_names_are_cut_keeping_the_extension() -> None:
    name = sanitize_source_name("a" * 5000 + ".pdf")
    assert len(name) == 255 and name.endswith(".pdf")


def test_traversal_name_is_stored_as_base_name() -> None:
    assert extract("../../etc/passwd.txt", b"root:x:0:0").source_name == "passwd.txt"


def test_normalization_and_hash() -> None:
    nfd = "Cafe\u0301\r\nline two   \r\n\r\n\r\n"
    nfc = "Café\nline two"
    assert normalize_content(nfd) == nfc
    assert content_hash(normalize_content(nfd)) == content_hash(nfc)
    assert normalize_content("a\x00b\x07c\x0cd") == "abc\nd"
    assert content_hash("a") != content_hash("b")
