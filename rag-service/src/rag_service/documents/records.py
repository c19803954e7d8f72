"""What the intake (intake.py) takes in and answers with: files as received, batch items,
and each item's outcome. The request parsers build the items; the wire schemas
(schemas.py) are built from the outcomes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rag_service.errors import AppError
from rag_service.storage.models import Document


@dataclass(frozen=True)
class UploadedFile:
    """One file as received: the client's file name (untrusted) and its bytes."""

    filename: str | None
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class TextItem:
    title: str
    content: str
    metadata: dict[str, Any] | None
    # UTF-8 bytes of the content (measured off the event loop by the request parser).
    size: int


@dataclass(frozen=True)
class FileItem:
    file: UploadedFile
    title: str | None
    metadata: dict[str, Any] | None

    @property
    def size(self) -> int:
        return self.file.size


@dataclass(frozen=True)
class InvalidItem:
    """An item refused while the request was parsed (e.g. a field of the wrong type)."""

    error: AppError
    size: int = 0


BatchItem = TextItem | FileItem | InvalidItem


@dataclass(frozen=True)
class StoredDocument:
    document: Document
    created: bool


@dataclass(frozen=True)
class ItemOutcome:
    """One batch item's answer: `stored` (created or duplicate) or `error`."""

    index: int
    stored: StoredDocument | None = None
    error: AppError | None = None
