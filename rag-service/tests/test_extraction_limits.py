"""The readers' caps, on generated hostile files: each is a clear 413/422, never a 500,
and the HTML reader keeps block-level line breaks on large inputs."""

from __future__ import annotations

import pytest

from hostile_files import (
    corrupt_docx,
    corrupt_pdf,
    docx_zip_bomb,
    many_paragraphs_html,
    nested_divs_html,
    pdf_with_lying_xref,
    pdf_with_page_tree_cycle,
    pdf_with_pages,
    shared_stream_pdf,
)
from rag_service.documents.extraction import ExtractionLimits, extract
from rag_service.errors import PayloadTooLarge, Unprocessable

SMALL = ExtractionLimits(max_document_chars=100_000)  # inflate / content cap: 1,000,000 bytes


def test_ten_thousand_paragraphs_keep_their_paragraph_breaks() -> None:
    content = extract("many.html", many_paragraphs_html(10_000)).content
    paragraphs = content.split("\n\n")
    assert len(paragraphs) == 10_000 and set(paragraphs) == {"paragraph text"}


def test_html_element_cap_is_413_naming_it() -> None:
    limits = ExtractionLimits(max_html_elements=5_000)
    with pytest.raises(PayloadTooLarge, match="more than 5000 HTML elements") as caught:
        extract("many.html", many_paragraphs_html(10_000), limits)
    assert caught.value.code == "html_too_many_elements"


def test_hundred_thousand_nested_divs_are_413_not_truncated() -> None:
    with pytest.raises(PayloadTooLarge, match="deeper than 200 levels") as caught:
        extract("deep.html", nested_divs_html(100_000))
    assert caught.value.code == "html_too_deep"


def test_depth_cap_never_exceeds_what_libxml2_parses() -> None:
    # libxml2 silently drops everything below 256 levels: a cap above that is lowered.
    with pytest.raises(PayloadTooLarge, match="deeper than 255 levels"):
        extract("deep.html", nested_divs_html(300), ExtractionLimits(max_html_depth=10_000))


def test_nesting_within_the_cap_is_read_whole() -> None:
    content = extract("nested.html", nested_divs_html(150)).content
    assert content.split() == ["x"] * 150


def test_unlabelled_html_is_read_as_utf8_and_legacy_bytes_as_cp1252() -> None:
    assert extract("u.html", "<p>naïve café</p>".encode()).content == "naïve café"
    assert extract("w.html", "<p>café</p>".encode("cp1252")).content == "café"


def test_docx_inflating_past_ten_times_the_character_limit_is_413_before_parsing() -> None:
    bomb = docx_zip_bomb(50_000_000)
    assert len(bomb) < 200_000
    with pytest.raises(PayloadTooLarge, match="inflates to .* the limit is 1000000 bytes") as caught:
        extract("bomb.docx", bomb, SMALL)
    assert caught.value.code == "docx_inflates_too_large"


def test_docx_cap_follows_the_document_character_limit_by_default() -> None:
    assert ExtractionLimits().max_inflated_bytes == 10 * 2_000_000
    with pytest.raises(PayloadTooLarge, match="limit is 20000000 bytes"):
        extract("bomb.docx", docx_zip_bomb(25_000_000))


def test_pages_sharing_one_huge_content_stream_are_413() -> None:
    pdf = shared_stream_pdf(pages=10, operations=20_000)  # ~360 KB decoded per page
    assert len(pdf) < 10_000
    with pytest.raises(PayloadTooLarge, match="content streams larger than 1000000 bytes") as caught:
        extract("shared.pdf", pdf, SMALL)
    assert caught.value.code == "pdf_content_too_large"


def test_pdf_page_cap_is_413() -> None:
    pdf = pdf_with_pages(5, b"BT /F1 12 Tf 72 720 Td (hello) Tj ET")
    assert "hello" in extract("five.pdf", pdf).content
    with pytest.raises(PayloadTooLarge, match="5 pages; the limit is 4") as caught:
        extract("five.pdf", pdf, ExtractionLimits(max_pdf_pages=4))
    assert caught.value.code == "pdf_too_many_pages"


def test_pypdf_limit_reached_error_is_422() -> None:
    # LimitReachedError is a PyPdfError, not a PdfReadError.
    with pytest.raises(Unprocessable, match="LimitReachedError"):
        extract("xref.pdf", pdf_with_lying_xref())


@pytest.mark.parametrize("name, data", [
    ("cycle.pdf", pdf_with_page_tree_cycle()),
    ("corrupt.pdf", corrupt_pdf()),
    ("corrupt.docx", corrupt_docx()),
])
def test_corrupt_files_are_422_naming_the_file(name: str, data: bytes) -> None:
    with pytest.raises(Unprocessable, match=f"{name!r} is not a readable"):
        extract(name, data)


def test_text_far_over_the_character_limit_is_refused_before_normalizing() -> None:
    with pytest.raises(PayloadTooLarge, match="more than the limit of 100000 characters"):
        extract("big.txt", b"word " * 50_000, SMALL)
