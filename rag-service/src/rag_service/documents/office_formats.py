"""Readers for the ZIP-container formats beyond .docx: .pptx, .xlsx, .odt, .epub.

Each returns `(text, title)` or raises the service's 413/422, like the readers in
`extraction.py`, and runs only inside the extraction workers (`sandbox.py`) under their
time, CPU and memory limits. Before any XML is parsed, the archive's declared inflated size
is checked against `ExtractionLimits.max_inflated_bytes` (a ZIP bomb is a 413 at once), and
the text gathered so far is measured as it grows (2 x MAX_DOCUMENT_CHARS stops a reader).

- .pptx: python-pptx (slides in order: every shape's text, tables row by row, notes);
- .xlsx: openpyxl in read-only mode, values not formulas (one line per non-empty row,
  cells joined by " | ", a "## sheet" line per sheet); openpyxl parses with defusedxml
  (installed with it) so entity expansion is refused;
- .odt: the OpenDocument `content.xml` read with lxml (paragraphs and headings in order);
- .epub: the package document's spine in reading order, each XHTML part through the same
  HTML reader (and element / depth caps) as uploaded .html.
lxml parses with entity resolution and network access off.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from lxml import etree

from rag_service.errors import AppError, PayloadTooLarge, Unprocessable

if TYPE_CHECKING:
    from rag_service.documents.extraction import ExtractionLimits

ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError, NotImplementedError, KeyError)

ODF_TEXT_NS = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
ODF_OFFICE_NS = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
DC_NS = "http://purl.org/dc/elements/1.1/"
OPF_NS = "http://www.idpf.org/2007/opf"
CONTAINER_NS = "urn:oasis:names:tc:opendocument:xmlns:container"
XHTML_TYPES = frozenset({"application/xhtml+xml", "text/html"})


def _safe_parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                           remove_comments=True, remove_pis=True)


def check_inflated_size(source_name: str, data: bytes, kind: str, limits: ExtractionLimits) -> None:
    """413 when the archive's members would inflate past the limit (central directory sums)."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            inflated = sum(info.file_size for info in archive.infolist())
    except ZIP_ERRORS as exc:
        raise Unprocessable(f"{source_name!r} is not a readable {kind} file: {type(exc).__name__}") from exc
    if inflated > limits.max_inflated_bytes:
        raise PayloadTooLarge(
            f"{source_name!r} inflates to {inflated} bytes; the limit is {limits.max_inflated_bytes} bytes",
            code="archive_inflates_too_large",
        )


class _Parts:
    """Collects text parts and refuses past 2 x the document character limit."""

    def __init__(self, source_name: str, limits: ExtractionLimits) -> None:
        self.parts: list[str] = []
        self._chars = 0
        self._source_name = source_name
        self._limit = 2 * limits.max_document_chars
        self._max = limits.max_document_chars

    def add(self, text: str, separator: str = "\n\n") -> None:
        """Append `text` (blank text is skipped) after `separator`."""
        if not text.strip():
            return
        if self.parts:
            self.parts.append(separator)
        self.parts.append(text)
        self._chars += len(text) + len(separator)
        if self._chars > self._limit:
            raise PayloadTooLarge(f"{self._source_name!r} holds more than the limit of {self._max} characters")

    def text(self) -> str:
        return "".join(self.parts)


def _reading(source_name: str, kind: str, read: Callable[[], tuple[str, str | None]]) -> tuple[str, str | None]:
    """Run a reader: our own 4xx pass through, any library error on a malformed file is a 422."""
    try:
        return read()
    except AppError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # the libraries raise KeyError, ValueError, lxml and zipfile errors...
        message = " ".join(str(exc).split())[:200]
        raise Unprocessable(f"{source_name!r} is not a readable {kind} file: {type(exc).__name__}: {message}") from exc


# --- .pptx -------------------------------------------------------------------------------


def read_pptx(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    check_inflated_size(source_name, data, ".pptx", limits)

    def read() -> tuple[str, str | None]:
        from pptx import Presentation

        presentation = Presentation(io.BytesIO(data))
        parts = _Parts(source_name, limits)
        for number, slide in enumerate(presentation.slides, start=1):
            texts = list(_shape_texts(slide.shapes))
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                texts.append(slide.notes_slide.notes_text_frame.text)
            if any(text.strip() for text in texts):
                parts.add(f"Slide {number}\n" + "\n".join(text for text in texts if text.strip()))
        return parts.text(), presentation.core_properties.title or None

    return _reading(source_name, ".pptx", read)


def _shape_texts(shapes: object) -> Iterator[str]:
    for shape in shapes:  # type: ignore[attr-defined]
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield shape.text_frame.text
        if getattr(shape, "has_table", False) and shape.has_table:
            for row in shape.table.rows:
                cells = [cell.text.strip() for cell in row.cells]
                if any(cells):
                    yield " | ".join(cells)
        if hasattr(shape, "shapes"):  # a group shape
            yield from _shape_texts(shape.shapes)


# --- .xlsx -------------------------------------------------------------------------------


def read_xlsx(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    check_inflated_size(source_name, data, ".xlsx", limits)

    def read() -> tuple[str, str | None]:
        from openpyxl import load_workbook

        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True, keep_links=False)
        try:
            parts = _Parts(source_name, limits)
            for sheet in workbook.worksheets:
                headed = False
                for row in sheet.iter_rows(values_only=True):
                    cells = ["" if value is None else str(value).strip() for value in row]
                    while cells and not cells[-1]:
                        cells.pop()
                    if any(cells):
                        if not headed:
                            parts.add(f"## {sheet.title}")
                            headed = True
                        parts.add(" | ".join(cells), separator="\n")
            title = workbook.properties.title if workbook.properties else None
        finally:
            workbook.close()
        return parts.text(), title or None

    return _reading(source_name, ".xlsx", read)


# --- .odt --------------------------------------------------------------------------------


def read_odt(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    check_inflated_size(source_name, data, ".odt", limits)

    def read() -> tuple[str, str | None]:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            content = etree.fromstring(archive.read("content.xml"), _safe_parser())
            meta = archive.read("meta.xml") if "meta.xml" in archive.namelist() else None
        parts = _Parts(source_name, limits)
        paragraph_tags = {f"{{{ODF_TEXT_NS}}}p", f"{{{ODF_TEXT_NS}}}h"}
        for element in content.iter(*paragraph_tags):
            parts.add(_odf_text(element))
        title = None
        if meta is not None:
            found = etree.fromstring(meta, _safe_parser()).find(f".//{{{DC_NS}}}title")
            title = found.text if found is not None else None
        return parts.text(), title

    return _reading(source_name, ".odt", read)


def _odf_text(element: etree._Element) -> str:
    """A paragraph's text: spans inline, <text:s c="n"/> as spaces, tabs and line breaks."""
    pieces = [element.text or ""]
    for child in element:
        name = etree.QName(child).localname
        if name == "s":
            pieces.append(" " * int(child.get(f"{{{ODF_TEXT_NS}}}c", "1") or 1))
        elif name == "tab":
            pieces.append("\t")
        elif name == "line-break":
            pieces.append("\n")
        elif name not in ("p", "h", "note"):
            pieces.append(_odf_text(child))
        pieces.append(child.tail or "")
    return "".join(pieces)


# --- .epub -------------------------------------------------------------------------------


def read_epub(source_name: str, data: bytes, limits: ExtractionLimits) -> tuple[str, str | None]:
    check_inflated_size(source_name, data, ".epub", limits)

    def read() -> tuple[str, str | None]:
        from rag_service.documents.html_text import html_to_text

        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
            container = etree.fromstring(archive.read("META-INF/container.xml"), _safe_parser())
            rootfile = container.find(f".//{{{CONTAINER_NS}}}rootfile")
            if rootfile is None or not rootfile.get("full-path"):
                raise Unprocessable(f"{source_name!r} is not a readable .epub file: no package document")
            opf_path = rootfile.get("full-path")
            package = etree.fromstring(archive.read(opf_path), _safe_parser())
            base = posixpath.dirname(opf_path)
            manifest = {item.get("id"): item for item in package.iter(f"{{{OPF_NS}}}item")}
            parts = _Parts(source_name, limits)
            for itemref in package.iter(f"{{{OPF_NS}}}itemref"):
                item = manifest.get(itemref.get("idref"))
                if item is None or item.get("media-type") not in XHTML_TYPES:
                    continue
                path = posixpath.normpath(posixpath.join(base, item.get("href", "")))
                if path not in names:
                    continue
                text, _ = html_to_text(source_name, archive.read(path), max_elements=limits.max_html_elements,
                                       max_depth=limits.max_html_depth)
                parts.add(text)
            found = package.find(f".//{{{DC_NS}}}title")
            title = found.text if found is not None else None
        return parts.text(), title

    return _reading(source_name, ".epub", read)
