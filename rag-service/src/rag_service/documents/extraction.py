"""Uploaded files -> plain text: .txt, .md, .html, .pdf, .docx.

The type is decided by the file name's extension AND checked against the bytes (PDF magic,
ZIP container with a Word part), so a renamed binary is refused instead of being stored as
garbage. Client-sent content types are not trusted. Errors are the service's 4xx errors:
415 for a type we do not read, 422 for a file of a supported type we cannot read, 413 for a
file over one of the `ExtractionLimits` (element count, nesting depth, inflated size, pages).
Every reader error (pypdf's `PyPdfError` family, python-docx, lxml, zipfile) is a 422.

`extract` is pure CPU work on untrusted bytes: the service runs it only inside the
sandboxed process pool (`documents/sandbox.py`), never on the event loop. Keep this
module's imports light (no torch, no FastAPI): the pool's workers import it.

`normalize_content` is the one normalization every document goes through (uploads and
`/save-document` alike): the content hash used for deduplication is taken after it.
"""

from __future__ import annotations

import hashlib
import io
import re
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from rag_service.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType

TEXT_PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

MIME_BY_EXTENSION = {
    ".txt": TEXT_PLAIN, ".text": TEXT_PLAIN, ".md": MARKDOWN, ".markdown": MARKDOWN,
    ".html": HTML, ".htm": HTML, ".pdf": PDF, ".docx": DOCX,
}
SUPPORTED_EXTENSIONS = ", ".join(sorted({".txt", ".md", ".html", ".pdf", ".docx"}))

PDF_MAGIC = b"%PDF-"
ZIP_MAGIC = b"PK\x03\x04"
MAX_SOURCE_NAME_CHARS = 255
# Control characters other than tab and newline: meaningless in text, and Postgres
# refuses NUL in text columns. Form feed / vertical tab (PDF page breaks) become newlines.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x85\u2028\u2029]")


@dataclass(frozen=True)
class ExtractedFile:
    source_name: str
    mime_type: str
    content: str
    # A title found inside the file (HTML <title>, PDF / DOCX properties), if any.
    title: str | None = None


@dataclass(frozen=True)
class ExtractionLimits:
    """Caps on the work one file may cause (defaults = the default settings).

    Derived from `Settings` by `ExtractionLimits.from_settings`: a .docx may inflate to and
    a PDF's page content streams may decode to at most `INFLATE_FACTOR` x the document
    character limit, checked before the XML / content is parsed.
    """

    max_document_chars: int = 2_000_000
    max_html_elements: int = 500_000
    max_html_depth: int = 200
    max_pdf_pages: int = 2_000

    INFLATE_FACTOR = 10

    @property
    def max_inflated_bytes(self) -> int:
        return self.INFLATE_FACTOR * self.max_document_chars

    @classmethod
    def from_settings(cls, settings: Any) -> ExtractionLimits:
        return cls(
            max_document_chars=settings.max_document_chars,
            max_html_elements=settings.extraction_max_html_elements,
            max_html_depth=settings.extraction_max_html_depth,
            max_pdf_pages=settings.extraction_max_pdf_pages,
        )


DEFAULT_LIMITS = ExtractionLimits()


def normalize_content(text: str) -> str:
    """NFC, "\\n" line breaks, no control characters, no trailing whitespace on any line,
    no leading/trailing blank lines. Chunk offsets index into this form."""
    text = unicodedata.normalize("NFC", text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _CONTROL_CHARS.sub("", text)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n")


def content_hash(normalized_content: str) -> str:
    return hashlib.sha256(normalized_content.encode("utf-8")).hexdigest()


def sanitize_source_name(name: str | None) -> str:
    """The base name only: no directories (either slash), no NUL or control characters,
    no leading dots, at most 255 characters (extension kept)."""
    name = (name or "").replace("\\", "/")
    name = PurePosixPath(name).name if name else ""
    name = _CONTROL_CHARS.sub("", unicodedata.normalize("NFC", name)).replace("\t", " ").strip()
    name = name.lstrip(".").strip()
    if len(name) > MAX_SOURCE_NAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and 0 < len(extension) <= 10:
            name = stem[: MAX_SOURCE_NAME_CHARS - len(extension) - 1] + "." + extension
        else:
            name = name[:MAX_SOURCE_NAME_CHARS]
    return name or "upload"


def detect_mime_type(source_name: str, data: bytes) -> str:
    """The type to read `data` as, from the extension, checked against the content."""
    extension = PurePosixPath(source_name.lower()).suffix
    declared = MIME_BY_EXTENSION.get(extension)
    sniffed = _sniff_binary(data)
    if declared is None:
        if sniffed is not None:
            return sniffed
        raise UnsupportedMediaType(
            f"unsupported file type {extension or '(no extension)'!r} for {source_name!r}; "
            f"supported: {SUPPORTED_EXTENSIONS}"
        )
    if declared in (PDF, DOCX):
        if sniffed != declared:
            raise UnsupportedMediaType(
                f"{source_name!r} is named {extension} but its content is not a {extension} file; "
                f"supported: {SUPPORTED_EXTENSIONS}"
            )
        return declared
    if sniffed is not None or data.startswith(ZIP_MAGIC):
        raise UnsupportedMediaType(
            f"{source_name!r} is named {extension} but contains binary data ({sniffed or 'a ZIP archive'}); "
            f"supported: {SUPPORTED_EXTENSIONS}"
        )
    return declared


def _sniff_binary(data: bytes) -> str | None:
    if data[:1024].lstrip().startswith(PDF_MAGIC):
        return PDF
    if data.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if "word/document.xml" in archive.namelist():
                    return DOCX
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError):
            return None
    return None


def extract(filename: str | None, data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> ExtractedFile:
    """Plain text of an uploaded file (normalized), or a 413/415/422 naming the problem."""
    source_name = sanitize_source_name(filename)
    mime_type = detect_mime_type(source_name, data)
    reader = {TEXT_PLAIN: _read_text, MARKDOWN: _read_text, HTML: _read_html, PDF: _read_pdf, DOCX: _read_docx}
    text, title = reader[mime_type](source_name, data, limits)
    _check_length(source_name, text, limits)
    content = normalize_content(text)
    if not content.strip():
        raise Unprocessable(f"{source_name!r} contains no text")
    return ExtractedFile(source_name=source_name, mime_type=mime_type, content=content,
                         title=" ".join(title.split()) if title and title.strip() else None)


def _check_length(source_name: str, text: str, limits: ExtractionLimits) -> None:
    # Normalizing never more than halves a text: beyond 2x the limit it cannot fit, so it
    # is refused before the copies normalization makes (the service checks the exact limit).
    if len(text) > 2 * limits.max_document_chars:
        raise PayloadTooLarge(f"{source_name!r} holds more than the limit of {limits.max_document_chars} characters")


def decode_text(source_name: str, data: bytes) -> str:
    """UTF-8 (a BOM is dropped); UTF-16 only when it says so with a BOM."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(
            f"{source_name!r} is not valid UTF-8 text (invalid byte at offset {exc.start}); "
            "save it as UTF-8 and upload it again"
        ) from exc
    if "\x00" in text:
        raise Unprocessable(f"{source_name!r} contains NUL bytes: it is binary, not text")
    return text


def _read_text(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    return decode_text(source_name, data), None


def _read_html(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    from rag_service.documents.html_text import html_to_text

    return html_to_text(source_name, data, max_elements=limits.max_html_elements, max_depth=limits.max_html_depth)


def _read_pdf(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many "encrypted" PDFs only restrict printing and open with an empty password.
            try:
                opened = reader.decrypt("")
            except Exception:  # unsupported encryption algorithms raise various errors
                opened = 0
            if not opened:
                raise Unprocessable(f"{source_name!r} is an encrypted PDF: remove the password and upload it again")
        page_count = len(reader.pages)
        if page_count > limits.max_pdf_pages:
            raise PayloadTooLarge(f"{source_name!r} has {page_count} pages; the limit is {limits.max_pdf_pages}",
                                  code="pdf_too_many_pages")
        # Every page's content stream is decoded (bounded by pypdf's own decompression
        # limits) and measured before any is interpreted: pages sharing one huge stream add up.
        content_bytes = 0
        for page in reader.pages:
            contents = page.get_contents()
            content_bytes += len(contents.get_data()) if contents is not None else 0
            if content_bytes > limits.max_inflated_bytes:
                raise PayloadTooLarge(
                    f"{source_name!r} has page content streams larger than {limits.max_inflated_bytes} bytes in all",
                    code="pdf_content_too_large",
                )
        pages: list[str] = []
        text_chars = 0
        for page in reader.pages:
            pages.append(page.extract_text() or "")
            text_chars += len(pages[-1])
            if text_chars > 2 * limits.max_document_chars:
                raise PayloadTooLarge(f"{source_name!r} holds more than the limit of {limits.max_document_chars} characters")
        title = reader.metadata.title if reader.metadata else None
    except (Unprocessable, PayloadTooLarge):
        raise
    except MemoryError:
        raise
    except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError, OSError, RecursionError,
            ZeroDivisionError, UnicodeError, LookupError) as exc:
        raise Unprocessable(f"{source_name!r} is not a readable PDF: {type(exc).__name__}: {_short(exc)}") from exc
    text = "\n\n".join(page.strip() for page in pages if page.strip())
    if not text:
        raise Unprocessable(f"{source_name!r} has no extractable text (a scanned PDF needs OCR first)")
    return text, str(title) if title else None


def _short(exc: BaseException, limit: int = 200) -> str:
    message = " ".join(str(exc).split())
    return message if len(message) <= limit else message[:limit] + "..."


def _read_docx(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    import docx
    from docx.table import Table

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            # Declared sizes, read from the central directory before anything is inflated.
            inflated = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError) as exc:
        raise Unprocessable(f"{source_name!r} is not a readable .docx file: {type(exc).__name__}") from exc
    if inflated > limits.max_inflated_bytes:
        raise PayloadTooLarge(
            f"{source_name!r} inflates to {inflated} bytes; the limit is {limits.max_inflated_bytes} bytes",
            code="docx_inflates_too_large",
        )
    try:
        # A member whose real size differs from its declared size fails zipfile's CRC /
        # length checks while it is read: the declared sums above are what bound the work.
        document = docx.Document(io.BytesIO(data))
        parts: list[str] = []
        # Body order: paragraphs and tables interleaved as in the document.
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                for row in item.rows:
                    cells = [cell.text.strip() for cell in row.cells]
                    if any(cells):
                        parts.append(" | ".join(cells))
            elif item.text.strip():
                parts.append(item.text)
        title = document.core_properties.title
    except MemoryError:
        raise
    except Exception as exc:  # python-docx raises KeyError, ValueError, lxml and zipfile errors...
        raise Unprocessable(f"{source_name!r} is not a readable .docx file: {type(exc).__name__}: {_short(exc)}") from exc
    return "\n\n".join(parts), title or None
