"""When a file's own title says nothing about it, its filename names the document.

Tools write placeholders into a file's title property: GNU enscript's "Enscript Output",
Word's "Microsoft Word - report.doc" (a print driver naming the source file), an HTML
editor's "Untitled Document", Office's "Document1" or "PowerPoint Presentation". Such a
title would make every document from one tool look the same in listings and search
results, so it is dropped and the upload's filename is used instead (documents/intake.py).
"""

from __future__ import annotations

import re

# Compared case-insensitively, after collapsing whitespace.
GENERIC_TITLES = frozenset({
    "enscript output", "untitled", "untitled document", "untitled page", "no title", "title", "document",
    "new document", "word document", "presentation", "powerpoint presentation", "slide 1", "unknown",
    "none", "null", "default", "print", "index", "home", "page", "insert title here", "title of document",
    "microsoft word", "pdf", "ps2pdf", "output",
})
# Numbered placeholders ("Document1", "Untitled-2", "Book1", "Presentation1", "Slide 3") and
# print-driver prefixes ("Microsoft Word - report.doc", "Microsoft PowerPoint - deck.pptx").
GENERIC_PATTERNS = re.compile(
    r"(untitled|document|doc|book|presentation|slide|page)[\s_-]*\d*"
    r"|microsoft (office )?(word|powerpoint|excel)( - .*)?",
    re.IGNORECASE,
)
# Nothing to read: punctuation, digits and spaces only.
_NO_LETTERS = re.compile(r"[\W\d_]*")


def meaningful_title(title: str | None) -> str | None:
    """The title with its whitespace collapsed, or None when it is empty or a placeholder."""
    if title is None:
        return None
    collapsed = " ".join(title.split())
    if (not collapsed or collapsed.lower() in GENERIC_TITLES or GENERIC_PATTERNS.fullmatch(collapsed)
            or _NO_LETTERS.fullmatch(collapsed)):
        return None
    return collapsed
