"""Uploaded files -> plain text: PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx),
OpenDocument text (.odt), EPUB, HTML, Markdown, and plain text of any name.

The type is decided by the bytes and the file name's extension together:
- the containers (.pdf, .docx, .pptx, .xlsx, .odt, .epub) are recognised by their content
  (PDF magic; a ZIP with a Word / PowerPoint / Excel part or an OpenDocument / EPUB
  `mimetype`), with or without an extension; a file named like one that is not is a 415;
- a file named like text (.txt, .md, .html, .csv, .tsv, .json, .rst, .log) is read as text
  (invalid UTF-8 or NUL bytes: 422), one holding a container or PDF is a 415;
- any other file, with an unknown extension or none (README, NOTES, FAQ, source code), is
  plain text when its content is (valid UTF-8, or UTF-16 with a BOM, no NUL, almost no
  control characters), otherwise a 415 ("binary content").
Client-sent content types are not trusted. Errors are the service's 4xx errors: 415 for a
type we do not read, 422 for a file of a supported type we cannot read, 413 for a file over
one of the `ExtractionLimits` (element count, nesting depth, inflated size, pages). Every
reader error (pypdf's `PyPdfError` family, python-docx, python-pptx, openpyxl, lxml,
zipfile) is a 422.

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

from rag_service.documents.titles import meaningful_title
from rag_service.errors import PayloadTooLarge, Unprocessable, UnsupportedMediaType

TEXT_PLAIN = "text/plain"
MARKDOWN = "text/markdown"
HTML = "text/html"
PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
ODT = "application/vnd.oasis.opendocument.text"
EPUB = "application/epub+zip"
CSV = "text/csv"
TSV = "text/tab-separated-values"
JSON = "application/json"
RST = "text/x-rst"

MIME_BY_EXTENSION = {
    ".txt": TEXT_PLAIN, ".text": TEXT_PLAIN, ".log": TEXT_PLAIN, ".md": MARKDOWN, ".markdown": MARKDOWN,
    ".html": HTML, ".htm": HTML, ".xhtml": HTML, ".csv": CSV, ".tsv": TSV, ".json": JSON, ".rst": RST,
    ".pdf": PDF, ".docx": DOCX, ".pptx": PPTX, ".xlsx": XLSX, ".odt": ODT, ".epub": EPUB,
}
# Binary formats: read only when the content is one.
CONTAINER_TYPES = frozenset({PDF, DOCX, PPTX, XLSX, ODT, EPUB})
# The part that says which Office Open XML document a ZIP holds.
OOXML_MAIN_PART = {"word/document.xml": DOCX, "ppt/presentation.xml": PPTX, "xl/workbook.xml": XLSX}
# The first member `mimetype` of OpenDocument and EPUB archives.
ZIP_MIMETYPES = {ODT.encode(): ODT, EPUB.encode(): EPUB}
SUPPORTED_EXTENSIONS = (", ".join(sorted({".txt", ".md", ".html", ".csv", ".tsv", ".json", ".rst", ".log", ".pdf",
                                          ".docx", ".pptx", ".xlsx", ".odt", ".epub"}))
                        + ", and text files of any name (README, source code)")
# Text sniffing: how much of the file is looked at, and the share of control characters
# (other than tab, newlines, form feed, escape) above which it is binary.
SNIFF_BYTES = 65_536
MAX_CONTROL_SHARE = 0.01
_BINARY_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")

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
    # A title found inside the file (HTML <title>, PDF / DOCX properties), unless it is a
    # placeholder such as "Enscript Output" (documents/titles.py).
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
    """The type to read `data` as, from its content and its name (see the module docstring)."""
    extension = PurePosixPath(source_name.lower()).suffix
    declared = MIME_BY_EXTENSION.get(extension)
    sniffed = _sniff_binary(data)
    if declared in CONTAINER_TYPES:
        if sniffed != declared:
            raise UnsupportedMediaType(
                f"{source_name!r} is named {extension} but its content is not a {extension} file; "
                f"supported: {SUPPORTED_EXTENSIONS}"
            )
        return declared
    if sniffed is not None:
        if declared is None:
            return sniffed
        raise UnsupportedMediaType(
            f"{source_name!r} is named {extension} but contains binary data ({sniffed}); "
            f"supported: {SUPPORTED_EXTENSIONS}"
        )
    if data.startswith(ZIP_MAGIC):
        raise UnsupportedMediaType(
            f"{source_name!r} is a ZIP archive of no supported kind; supported: {SUPPORTED_EXTENSIONS}"
        )
    if declared is not None:
        return declared  # text by its name: decoding problems are the reader's clear 422
    if looks_like_text(data):
        return TEXT_PLAIN
    raise UnsupportedMediaType(
        f"{source_name!r} has binary content, not text nor a supported document; supported: {SUPPORTED_EXTENSIONS}"
    )


def looks_like_text(data: bytes) -> bool:
    """Whether the start of `data` is text: UTF-8 (or UTF-16 with a BOM) without NUL and
    with almost no control characters. A multi-byte character cut at the sniffing window's
    end is not held against it."""
    head = data[:SNIFF_BYTES]
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = head[: len(head) - len(head) % 2].decode("utf-16")
        except UnicodeDecodeError:
            return False
    else:
        try:
            text = head.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            if len(data) <= SNIFF_BYTES or exc.start < len(head) - 3:
                return False
            text = head[: exc.start].decode("utf-8-sig")
    if "\x00" in text:
        return False
    return len(_BINARY_CONTROL.findall(text)) <= MAX_CONTROL_SHARE * max(1, len(text))


def _sniff_binary(data: bytes) -> str | None:
    if data[:1024].lstrip().startswith(PDF_MAGIC):
        return PDF
    if data.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                names = set(archive.namelist())
                for part, mime_type in OOXML_MAIN_PART.items():
                    if part in names:
                        return mime_type
                if "mimetype" in names and archive.getinfo("mimetype").file_size < 100:
                    return ZIP_MIMETYPES.get(archive.read("mimetype").strip())
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError,
                KeyError, RuntimeError):
            return None
    return None


def extract(filename: str | None, data: bytes, limits: ExtractionLimits = DEFAULT_LIMITS) -> ExtractedFile:
    """Plain text of an uploaded file (normalized), or a 413/415/422 naming the problem."""
    source_name = sanitize_source_name(filename)
    mime_type = detect_mime_type(source_name, data)
    text, title = _READERS.get(mime_type, _read_text)(source_name, data, limits)
    _check_length(source_name, text, limits)
    content = normalize_content(text)
    if not content.strip():
        raise Unprocessable(f"{source_name!r} contains no text")
    return ExtractedFile(source_name=source_name, mime_type=mime_type, content=content,
                         title=meaningful_title(title))


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


def _readers() -> dict[str, Any]:
    from rag_service.documents import office_formats

    return {HTML: _read_html, PDF: _read_pdf, DOCX: _read_docx, PPTX: office_formats.read_pptx,
            XLSX: office_formats.read_xlsx, ODT: office_formats.read_odt, EPUB: office_formats.read_epub}


# Every other type (plain text, Markdown, CSV, TSV, JSON, reStructuredText) is read as text.
_READERS = _readers()
