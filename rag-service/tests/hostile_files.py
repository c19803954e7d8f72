"""Hostile files, generated in memory (no binary fixtures): the uploads of issue 11.

Each builder returns bytes small enough to upload but expensive or broken to read.
"""

from __future__ import annotations

import io
import zipfile
import zlib


def many_paragraphs_html(count: int = 10_000, text: str = "paragraph text") -> bytes:
    return b"<html><body>" + b"<p>%s</p>" % text.encode() * count + b"</body></html>"


def nested_divs_html(depth: int = 100_000) -> bytes:
    return b"<html><body>" + b"<div>x" * depth + b"</div>" * depth + b"</body></html>"


def pdf_bytes(objects: list[bytes], *, root: int = 1, xref_count: int | None = None,
              info: int | None = None) -> bytes:
    """A PDF of numbered objects (1..n) with a correct xref table (or a lying count);
    `info` names the object holding the document information (/Title)."""
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    count = len(objects) + 1 if xref_count is None else xref_count
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % count)
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    info_entry = b" /Info %d 0 R" % info if info is not None else b""
    out.write(b"trailer\n<< /Size %d /Root %d 0 R%s >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, root, info_entry, xref))
    return out.getvalue()


def _stream(data: bytes, compress: bool = True) -> bytes:
    if compress:
        data = zlib.compress(data, 9)
        return b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(data) + data + b"\nendstream"
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


def pdf_with_pages(page_count: int, content: bytes, *, shared: bool = True) -> bytes:
    """`page_count` pages whose /Contents is one (shared) Flate-compressed stream."""
    font = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"
    # 1 catalog, 2 pages, 3 font, 4 content stream, 5.. pages
    kids = b" ".join(b"%d 0 R" % (5 + i) for i in range(page_count))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [" + kids + b"] /Count %d >>" % page_count,
        font,
        _stream(content),
    ]
    for _ in range(page_count):
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>")
    return pdf_bytes(objects)


def busy_content(operations: int, text: str = "hello") -> bytes:
    """A content stream with little text and `operations` cheap-to-write operators."""
    return b"BT /F1 12 Tf 72 720 Td (" + text.encode() + b") Tj ET\n" + b"q 1 0 0 1 0 0 cm Q\n" * operations


def shared_stream_pdf(pages: int = 10, operations: int = 200_000) -> bytes:
    """Pages sharing one huge content stream: small on disk, large decoded work per page."""
    return pdf_with_pages(pages, busy_content(operations))


def pdf_with_lying_xref() -> bytes:
    """A tiny PDF whose xref declares a billion entries: pypdf raises LimitReachedError."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
    ]
    return pdf_bytes(objects, xref_count=1_000_000_000)


def pdf_with_page_tree_cycle() -> bytes:
    """The /Pages node lists itself as a kid: pypdf's cycle detection raises LimitReachedError."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [2 0 R] /Count 3 >>",
    ]
    return pdf_bytes(objects)


def docx_zip_bomb(inflated_bytes: int) -> bytes:
    """A .docx whose document.xml inflates to `inflated_bytes` (deflate: ~1000:1)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types/>')
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0"?><w:document xmlns:w="x"><w:body>')
            chunk = b"<w:p/>" * 100_000
            written = 0
            while written < inflated_bytes:
                member.write(chunk)
                written += len(chunk)
            member.write(b"</w:body></w:document>")
    return out.getvalue()


def corrupt_docx() -> bytes:
    """A ZIP with a word/document.xml that is not XML (so it sniffs as .docx)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "not xml <<<")
        archive.writestr("word/document.xml", "<w:document><unclosed")
    return out.getvalue()


def corrupt_pdf() -> bytes:
    return b"%PDF-1.7\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"
